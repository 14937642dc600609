"""CLI command: `loradeck estimate PROJECT [train flags]`.

The estimate (loradeck.trainer.gpu.vram_estimate) needs no GPU. Where NVML sees GPUs, each one's free memory is
compared with what nvidia-smi would show for the run, and a run that fits nowhere gets the
cheapest knobs that make it fit (loradeck.trainer.gpu.fit_check, which `loradeck train` runs too).
"""

from __future__ import annotations

from loradeck.trainer.cli import CommandResult
from loradeck.trainer.cli.cmd_train import overrides_from, train_flags
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.dataset import project as projects
from loradeck.trainer.gpu.fit_check import advice_line, check_fit
from loradeck.trainer.gpu.vram_estimate import GiB, gib


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


def cmd_estimate(args) -> CommandResult:
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
