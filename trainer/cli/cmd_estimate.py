"""CLI command: `loradeck estimate PROJECT [train flags]`, and the fit check `loradeck train` runs.

The estimate (loradeck.trainer.gpu.vram_estimate) needs no GPU. Where NVML sees GPUs, each one's free memory is
compared with what nvidia-smi would show for the run, and a run that fits nowhere gets the
cheapest knobs that make it fit (loradeck.trainer.gpu.vram_estimate.fit_advice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loradeck.trainer.cli import CommandResult
from loradeck.trainer.cli.cmd_train import overrides_from, train_flags
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.dataset import project as projects


def register(sub, parent) -> None:
    p = sub.add_parser("estimate", parents=[parent], help="predict a run's GPU memory (no GPU needed)",
                       description="Predict peak GPU memory for a training run with the given flags, by tracing"
                                   " one step of the real architecture on the meta device (no weights read)."
                                   " With NVIDIA GPUs present, says on which it fits now and, if on none, the"
                                   " cheapest knobs that make it fit.")
    p.add_argument("name", help="project name")
    p.add_argument("--config", metavar="FILE", help="a loradeck run TOML or a kohya train_network.py TOML")
    train_flags(p)
    p.set_defaults(handler=cmd_estimate)


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
    from loradeck.trainer.gpu import monitor as gpu_monitor
    from loradeck.trainer.gpu import vram_estimate

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
    from loradeck.trainer.errors import ConfigError
    from loradeck.trainer.gpu import monitor as gpu_monitor

    if gpu_monitor.unavailable_reason() is not None:
        return None
    report = check_fit(cfg)
    if report.fits is False:
        raise ConfigError(refusal(report, cfg))
    return report


def refusal(report: FitReport, cfg: TrainConfig) -> str:
    """The one-line reason `loradeck train` refuses a run that does not fit, with the knob advice."""
    from loradeck.trainer.gpu.vram_estimate import gib

    short = [g for g in report.gpus if g["index"] in report.target and not g["fits"]]
    where = ", ".join(f"GPU {g['index']} has {gib(g['free'])} free" for g in short)
    text = f"the run needs about {gib(report.estimate.nvidia_smi_bytes)} of GPU memory; {where}"
    return text + "; " + advice_line(report)


def advice_line(report: FitReport) -> str:
    from loradeck.trainer.gpu.vram_estimate import gib

    if report.advice is None:
        return ""
    if report.advice.changes:
        return (f"to fit: {' '.join(report.advice.changes)} (estimated {gib(report.advice.estimate.nvidia_smi_bytes)})"
                "; or --force to start anyway")
    return "no memory knob makes it fit this GPU; use a larger GPU, or --force to try anyway"


def cmd_estimate(args) -> CommandResult:
    from loradeck.trainer.gpu.vram_estimate import GiB, gib

    project = projects.open_project(args.name, args.root)
    resolved = run_config.resolve(project, overrides_from(args), args.config)
    cfg = resolved.config
    report = check_fit(cfg)
    est = report.estimate
    lines = [f"estimated GPU memory for {cfg.base_model} at {cfg.resolution} px, batch {cfg.batch_size}"
             f" ({cfg.mixed_precision}, {cfg.attention}, checkpointing {'on' if cfg.gradient_checkpointing else 'off'},"
             f" {cfg.optimizer}):"]
    for part, n in est.breakdown.items():
        lines.append(f"  {part:<22} {n / GiB:7.2f} GiB")
    lines.append(f"  {'peak allocated':<22} {est.expected_peak_bytes / GiB:7.2f} GiB"
                 f"   torch.cuda.max_memory_allocated (peak in: {est.peak_phase})")
    if est.caching_peak_bytes is not None:
        lines.append(f"  {'while caching latents':<22} {est.caching_peak_bytes / GiB:7.2f} GiB")
    lines.append(f"  {'allocator reserved':<22} {est.reserved_bytes / GiB:7.2f} GiB")
    lines.append(f"  {'CUDA context':<22} {est.context_bytes / GiB:7.2f} GiB")
    lines.append(f"  {'nvidia-smi':<22} {est.nvidia_smi_bytes / GiB:7.2f} GiB")
    if not report.gpus:
        lines.append("no NVIDIA GPU seen (NVML): nothing to compare with")
    for g in report.gpus:
        mark = {True: "fits", False: "does not fit", None: "free memory unknown"}[g["fits"]]
        lines.append(f"GPU {g['index']} {g['name'] or '?'}: {gib(g['free'])} free of {gib(g['total'])}: {mark}")
    if report.advice is not None:
        lines.append(advice_line(report).replace("; or --force to start anyway", ""))
    lines.append(f"(estimated in {est.seconds:.1f} s; sources: docs/training.md#gpu-memory)")
    return CommandResult({"ok": True, "project": project.name, **report.to_dict()}, "\n".join(lines))
