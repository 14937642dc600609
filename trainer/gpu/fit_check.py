"""The fit check: a run's memory estimate against the free memory of this machine's GPUs (NVML).

`loradeck estimate` reports it; `loradeck train` refuses a run that fits on no GPU it would use, with
the cheapest knobs that make it fit (loradeck.trainer.gpu.vram_estimate.fit_advice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.errors import ConfigError
from loradeck.trainer.gpu import monitor as gpu_monitor
from loradeck.trainer.gpu import vram_estimate  # torch only inside its functions
from loradeck.trainer.gpu.vram_estimate import gib


@dataclass
class FitReport:
    """An estimate against the GPUs of this machine."""

    estimate: Any  # loradeck.trainer.gpu.vram_estimate.Estimate
    gpus: list[dict[str, Any]] = field(default_factory=list)  # index, name, free, fits
    target: list[int] = field(default_factory=list)  # the devices the run would use (first `gpus` visible)
    advice: Any = None  # vram_estimate.Advice when the target does not fit

    @property
    def fits(self) -> bool | None:
        """None when there is no GPU to compare with."""
        fits = [g["fits"] for g in self.gpus if g["index"] in self.target]
        if not fits or None in fits:  # no GPU, or NVML could not say how much memory is free
            return None
        return all(fits)

    def to_dict(self) -> dict[str, Any]:
        advice = None
        if self.advice is not None:
            advice = {"changes": self.advice.changes, "nvidia_smi_bytes": self.advice.estimate.nvidia_smi_bytes,
                      "expected_peak_bytes": self.advice.estimate.expected_peak_bytes}
        return {"estimate": self.estimate.to_dict(), "gpus": self.gpus, "target": self.target, "fits": self.fits,
                "advice": advice}


def check_fit(cfg: TrainConfig, *, advise: bool = True) -> FitReport:
    """Estimate `cfg` and compare it with each visible GPU's free memory (NVML)."""
    est = vram_estimate.estimate(cfg)
    gpus = []
    for d in gpu_monitor.query_devices():
        total, used = d.get("mem_total"), d.get("mem_used")
        free = total - used if isinstance(total, int) and isinstance(used, int) else None
        gpus.append({"index": d.get("index"), "name": d.get("name"), "free": free, "total": total,
                     "fits": None if free is None else est.nvidia_smi_bytes <= free})
    report = FitReport(est, gpus, [g["index"] for g in gpus[:max(1, cfg.gpus)]])
    if advise and report.fits is False:
        target_free = [g["free"] for g in gpus if g["index"] in report.target and g["free"] is not None]
        if target_free:
            report.advice = vram_estimate.fit_advice(cfg, min(target_free), current=est)
    return report


def refuse_unless_fits(cfg: TrainConfig) -> FitReport | None:
    """ConfigError (with the knob advice) when the run's estimate exceeds its GPU's free memory.
    Does nothing, and costs no estimate, where NVML sees no GPU."""
    if gpu_monitor.unavailable_reason() is not None:
        return None
    report = check_fit(cfg)
    if report.fits is False:
        raise ConfigError(refusal(report, cfg))
    return report


def refusal(report: FitReport, cfg: TrainConfig) -> str:
    """The one-line reason `loradeck train` refuses a run that does not fit, with the knob advice."""
    short = [g for g in report.gpus if g["index"] in report.target and not g["fits"]]
    where = ", ".join(f"GPU {g['index']} has {gib(g['free'])} free" for g in short)
    text = f"the run needs about {gib(report.estimate.nvidia_smi_bytes)} of GPU memory; {where}"
    return text + "; " + advice_line(report)


def advice_line(report: FitReport) -> str:
    if report.advice is None:
        return ""
    if report.advice.changes:
        return (f"to fit: {' '.join(report.advice.changes)} (estimated {gib(report.advice.estimate.nvidia_smi_bytes)})"
                "; or --force to start anyway")
    return "no memory knob makes it fit this GPU; use a larger GPU, or --force to try anyway"
