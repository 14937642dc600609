"""CLI commands: train, runs, stop, resume (see trainer/cli/__init__.py for the conventions).

`train` flags are derived from loradeck.trainer.config.train_config.TrainConfig in one place (`train_flags`): each field
gets `--field-name` unless FLAG_NAMES gives it a shorter documented name, with its type, choices
and help text (loradeck.trainer.config.resolve.FIELD_HELP) taken from the schema.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from dataclasses import fields
from typing import Any

from loradeck.trainer.cli import CommandResult, cmd_queue
from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.config import train_config
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.dataset import project as projects
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.gpu import fit_check
from loradeck.trainer.gpu import processes as gpu_processes
from loradeck.trainer.runs import choice as run_choice
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.slurm import batch as slurm
from loradeck.trainer.slurm import settings as slurm_settings

# TrainConfig field -> its command-line flag, where the flag is not simply --field-name.
FLAG_NAMES = {
    "max_train_steps": "--steps",
    "max_train_epochs": "--epochs",
    "learning_rate": "--lr",
    "target_modules": "--targets",
    "gradient_accumulation_steps": "--grad-accum",
    "caption_dropout_rate": "--caption-dropout",
    "sample_prompts": "--sample-prompt",
    "lr_warmup_steps": "--warmup-steps",
}
CHOICES: dict[str, tuple[str, ...]] = getattr(train_config, "_CHOICES", {})  # the schema's choice lists


def flag_for(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def train_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per TrainConfig field; a flag not given leaves its field to the lower layers."""
    group = parser.add_argument_group("run config (defaults < project.toml [train] < --config < flags)")
    limits = group.add_mutually_exclusive_group()
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        kind = str(f.type)
        help_text = run_config.FIELD_HELP.get(f.name, f.name.replace("_", " "))
        default = getattr(defaults, f.name)
        if default not in (None, [], ""):
            help_text += f" (default {default})"
        target = limits if f.name in ("max_train_steps", "max_train_epochs") else group
        common = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind.startswith("bool"):
            target.add_argument(flag_for(f.name), action=argparse.BooleanOptionalAction, **common)
        elif kind.startswith("list"):
            target.add_argument(flag_for(f.name), action="append", metavar="TEXT", **common)
        elif kind.startswith("int"):
            target.add_argument(flag_for(f.name), type=int, metavar="N", **common)
        elif kind.startswith("float"):
            target.add_argument(flag_for(f.name), type=float, metavar="X", **common)
        else:
            target.add_argument(flag_for(f.name), choices=CHOICES.get(f.name), metavar=_metavar(f.name),
                                **common)


def _metavar(name: str) -> str:
    choices = CHOICES.get(name)
    return "|".join(choices) if choices else name.split("_")[-1].upper()


# Slurm flag -> [slurm] key (trainer.config.slurm_settings); a flag not given leaves the key to the config files.
SLURM_FLAGS = {"--partition": ("partition", str), "--account": ("account", str), "--qos": ("qos", str),
               "--gres": ("gres", str), "--cpus": ("cpus", int), "--mem": ("mem", str),
               "--time-limit": ("time_limit", str), "--max-resubmits": ("max_resubmits", int)}


def slurm_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Slurm (user config / project.toml [slurm] < these flags; docs/cluster.md)")
    group.add_argument("--slurm", action="store_true",
                       help="submit the run as a Slurm batch job (implies --detach)")
    for flag, (key, kind) in SLURM_FLAGS.items():
        group.add_argument(flag, dest=f"slurm_{key}", type=kind, default=None, metavar=key.split("_")[0].upper(),
                           help=f"[slurm] {key}")


def slurm_settings_from(args: argparse.Namespace, project) -> Any:
    """The [slurm] settings for this submission: user config < project.toml < flags."""
    flags = {key: getattr(args, f"slurm_{key}") for key, _ in SLURM_FLAGS.values()
             if getattr(args, f"slurm_{key}", None) is not None}
    return slurm_settings.for_project(project.settings_file, flags)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig values given on the command line (and only those)."""
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}


RUN_HELP = ("run id, a unique prefix of it, or 'latest' (default: the project's one active run, else its"
            " newest; several active runs must be named)")


def register(sub, parent) -> None:
    """Add this area's subcommands to `sub` (argparse subparsers); `parent` has --root/--json."""
    p = sub.add_parser("train", parents=[parent], help="train a LoRA on a project's dataset",
                       description="Create a run and train it. Without --detach it runs in the foreground"
                                   " with a progress bar (Ctrl-C stops it after the current step, saving"
                                   " resumable state) and exits 0 completed, 2 stopped, 1 failed.")
    p.add_argument("name", help="project name")
    p.add_argument("--config", metavar="FILE", help="a loradeck run TOML or a kohya train_network.py TOML")
    p.add_argument("--detach", action="store_true", help="start in the background and return at once")
    cmd_queue.placement_flags(p)
    slurm_flags(p)
    p.add_argument("--force", action="store_true",
                   help="start even if the memory estimate exceeds the GPU's free memory")
    train_flags(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("runs", parents=[parent], help="list a project's training runs")
    p.add_argument("name", help="project name")
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("stop", parents=[parent], help="stop a running run (it saves state first)")
    p.add_argument("name", help="project name")
    p.add_argument("run", nargs="?", help=RUN_HELP)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it to stop (default 120)")
    p.add_argument("--force", action="store_true", help="kill it (SIGKILL) if it has not stopped by then")
    p.set_defaults(handler=cmd_stop)

    p = sub.add_parser("resume", parents=[parent], help="continue a stopped, failed or crashed run")
    p.add_argument("name", help="project name")
    p.add_argument("run", nargs="?", help=RUN_HELP)
    p.add_argument("--detach", action="store_true", help="start in the background and return at once")
    cmd_queue.placement_flags(p)
    p.set_defaults(handler=cmd_resume)


# ------------------------------------------------------------------------------------------ handlers

def _say(text: str) -> None:
    print(text, file=sys.stderr)


def cmd_train(args) -> CommandResult:
    project = projects.open_project(args.name, args.root)
    slurm = slurm_settings_from(args, project) if args.slurm else None
    if not args.slurm and any(getattr(args, f"slurm_{key}", None) is not None for key, _ in SLURM_FLAGS.values()):
        raise LoradeckError("Slurm options were given without --slurm", hint="add --slurm to submit to Slurm")
    resolved = run_config.resolve(project, overrides_from(args), args.config)
    if not getattr(args, "force", False) and not args.queue and not args.slurm and args.gpu is None:
        # (--gpu picks and checks the GPU against the same estimate; a queued run waits instead)
        fit_check.refuse_unless_fits(resolved.config)  # only where NVML sees a GPU (a queued run waits instead)
    gpu = gpu_processes.parse_gpu(args.gpu)
    if args.queue:
        files = runs.create_run_from(project, resolved)
        for note in resolved.notes if not args.json else ():
            _say(f"note: {note}")
        return cmd_queue.queued_result(project, files, gpu=gpu)
    if slurm is not None:
        files = runs.create_run_from(project, resolved)
        for note in resolved.notes if not args.json else ():
            _say(f"note: {note}")
        return _submitted(project, files, slurm, notes=resolved.notes)
    with cmd_queue.gpu_env(args, resolved.config):  # picked before the run folder exists
        files = runs.create_run_from(project, resolved)
        if not args.json:
            for note in resolved.notes:
                _say(f"note: {note}")
        if args.detach:
            return _detached(project, files, runs.start(files), notes=resolved.notes)
        proc = runs.launch(files)
    return _foreground(project, files, proc, quiet=args.json, notes=resolved.notes)


def _submitted(project, files, settings, *, notes=(), resumed=False, job_id=None) -> CommandResult:
    """Submit (or report a resubmission of) a run as a Slurm job."""
    if job_id is None:
        try:
            job_id = runs.submit_to_slurm(files, settings)
        except BaseException:
            shutil.rmtree(files.dir, ignore_errors=True)  # only its config was written: nothing to keep
            raise
    data = {"ok": True, "project": project.name, "run_id": files.run_id, "run_dir": str(files.dir),
            "slurm_job": job_id, "state": "queued", "resumed": resumed, "notes": list(notes)}
    name, run = project.name, files.run_id
    text = (f"{'resubmitted' if resumed else 'submitted'} run {run} as Slurm job {job_id}\n"
            f"  state: {command('runs', name)}\n"
            f"  watch: {command('monitor', name, run)}\n"
            f"  stop:  {command('stop', name, run)}\n"
            f"  job script: {files.slurm_script}")
    return CommandResult(data, text)


def cmd_resume(args) -> CommandResult:
    project = projects.open_project(args.name, args.root)
    files, why = run_choice.choose_run(project, args.run, "resume")
    run_choice.says_which(files, why)

    if slurm.read_record(files) is not None:
        result = _submitted(project, files, None, resumed=True, job_id=runs.resume(files))
    elif runs.run_state(files) == "queued":  # an orphan (its waiter killed) gets a new waiter
        args.run = files.run_id
        result = cmd_queue.cmd_requeue(args)
    elif args.queue:
        runs.check_resumable(files)
        result = cmd_queue.queued_result(project, files, resumed=True, gpu=gpu_processes.parse_gpu(args.gpu))
    else:
        with cmd_queue.gpu_env(args, run_config.read_run_config(files.config)[0]):
            if args.detach:
                result = _detached(project, files, runs.resume(files, detach=True), resumed=True)
            else:
                proc = runs.resume(files, detach=False)
        if not args.detach:
            result = _foreground(project, files, proc, quiet=args.json)
    result.data["chosen"] = why
    return result


def cmd_stop(args) -> CommandResult:
    project = projects.open_project(args.name, args.root)
    files, why = run_choice.choose_run(project, args.run, "stop")
    run_choice.says_which(files, why)

    if runs.run_state(files) == "queued" and slurm.read_record(files) is None:
        args.run = files.run_id
        return cmd_queue.cmd_cancel(args)
    report = runs.stop(files, timeout=args.timeout, force=args.force)
    report["chosen"] = why
    if report["ok"]:
        text = f"run {files.run_id} {report['state']} after {report['waited_s']:.1f} s"
        if report["forced"]:
            text += f" (killed; resume with: {command('resume', project.name, files.run_id)})"
        return CommandResult(report, text)
    return CommandResult(report, f"run {files.run_id} is still stopping after {report['waited_s']:.0f} s"
                                 " (it finishes its step and saves first); to kill it:"
                                 f" {command('stop', project.name, files.run_id, '--force')}", code=1)


def cmd_runs(args) -> CommandResult:
    project = projects.open_project(args.name, args.root)
    infos = runs.list_runs(project)
    rows = [info.to_dict() for info in infos]
    if not infos:
        return CommandResult({"ok": True, "project": project.name, "runs": []},
                             f"no runs in {project.name} (start one with: {command('train', project.name)})")
    lines = [f"{'RUN':<24} {'STATE':<10} {'STEP':>11} {'LOSS':>8}  {'STARTED':<16}  BASE MODEL"]
    for info in infos:
        step = f"{info.step}/{info.total_steps}" if info.total_steps else str(info.step)
        loss = f"{info.loss:.4f}" if info.loss is not None else "-"
        lines.append(f"{info.run_id:<24} {info.state:<10} {step:>11} {loss:>8}  {_when(info.started):<16}"
                     f"  {info.base_model or '?'}")
        if info.message:
            lines.append(f"{'':<24} {info.message}")
    return CommandResult({"ok": True, "project": project.name, "runs": rows}, "\n".join(lines))


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _detached(project, files, pid: int, *, notes=(), resumed=False) -> CommandResult:
    data = {"ok": True, "project": project.name, "run_id": files.run_id, "run_dir": str(files.dir),
            "pid": pid, "state": "starting", "resumed": resumed, "notes": list(notes)}
    text = (f"{'resumed' if resumed else 'started'} run {files.run_id} (pid {pid}) in the background\n"
            f"  watch: {command('monitor', project.name, files.run_id)}\n"
            f"  stop:  {command('stop', project.name, files.run_id)}\n"
            f"  log:   {files.log}")
    return CommandResult(data, text)


# ------------------------------------------------------------------------------ the foreground view

class _ProgressView:
    """Draws a run's events: a Rich progress bar (step/total, loss, it/s, ETA) plus its messages."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = self.task = None
        self._last: tuple[float, int] | None = None
        if quiet:
            return
        from rich.console import Console  # rich: off `loradeck --help`, whose parser imports every command module
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False)
        self.task = self.progress.add_task("starting", total=None, loss="-", rate="- it/s")

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def say(self, text: str, style: str = "") -> None:
        if self.quiet:
            return
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "warning":
            hint = f" ({event['hint']})" if event.get("hint") else ""
            self.say(f"warning: {event.get('message')}{hint}", "yellow")
        elif kind == "error":
            self.say(f"error [{event.get('kind')}]: {event.get('message')}", "bold red")
            if event.get("hint"):
                self.say(f"  hint: {event['hint']}", "red")
        elif self.quiet:
            return
        elif kind == "run_started":
            total = event.get("total_steps")
            self.progress.update(self.task, total=total if isinstance(total, int) else None)
        elif kind == "step":
            self._step(event)
        elif kind == "checkpoint":
            self.say(f"checkpoint at step {event.get('step')}: {event.get('path')}", "dim")
        elif kind == "sample":
            self.say(f"sample at step {event.get('step')}: {event.get('path')}", "dim")

    def on_status(self, status: dict[str, Any]) -> None:
        """The trainer's current phase (loading model, caching latents, training, sampling, ...)."""
        phase = status.get("phase")
        if not self.quiet and isinstance(phase, str) and phase:
            self.progress.update(self.task, description=phase)

    def _step(self, event: dict[str, Any]) -> None:
        step, total = event.get("step"), event.get("total_steps")
        if not isinstance(step, int):
            return
        rate = None
        if isinstance(event.get("step_time"), (int, float)) and event["step_time"] > 0:
            rate = 1.0 / event["step_time"]
        elif self._last and step > self._last[1] and event.get("time", 0) > self._last[0]:
            rate = (step - self._last[1]) / (event["time"] - self._last[0])
        if isinstance(event.get("time"), (int, float)):
            self._last = (event["time"], step)
        loss = event.get("loss")
        self.progress.update(
            self.task, completed=step,
            total=total if isinstance(total, int) else None,
            loss=f"{loss:.4f}" if isinstance(loss, (int, float)) else str(loss),
            rate=f"{rate:.2f} it/s" if rate else "- it/s")


def _log_tail(path, lines: int = 15, max_bytes: int = 16384) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - max_bytes))
            return fh.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _foreground(project, files, proc, *, quiet: bool, notes=()) -> CommandResult:
    """Watch the launched trainer until it exits; Ctrl-C asks it to stop (SIGINT to its group)."""
    interrupts = 0
    view = _ProgressView(quiet)

    def on_sigint(signum, frame):
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        try:
            runs.signal_run(files, signal.SIGINT)
        except (LoradeckError, OSError):
            try:
                os.killpg(proc.pid, signal.SIGINT)  # the run is its own session: pgid == pid
            except OSError:
                pass
        view.say("stopping: the trainer finishes this step and saves its state"
                 " (Ctrl-C again stops watching; the run still stops)", "yellow")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with view:
            view.say(f"run {files.run_id} (log: {files.log})", "dim")
            state = runs.follow(files, proc, view.on_event, on_status=view.on_status)
    except KeyboardInterrupt:
        data = {"ok": False, "run_id": files.run_id, "state": runs.run_state(files), "detached": True}
        return CommandResult(data, f"stopped watching; run {files.run_id} is stopping on its own"
                                   f" (see: {command('runs', project.name)})", code=130)
    finally:
        signal.signal(signal.SIGINT, previous)
    return _outcome(project, files, state, view, quiet=quiet, notes=notes)


def watch(project, files, *, quiet: bool) -> CommandResult:
    """`loradeck monitor` without a terminal (a script, a pipe, a CI job): follow a run started
    elsewhere, its history first, printing what the foreground view prints, until it ends; the exit
    status is the run's (0 completed, 2 stopped, 1 failed or crashed). Ctrl-C stops watching only."""
    view = _ProgressView(quiet)
    try:
        with view:
            view.say(f"watching run {files.run_id} (log: {files.log})", "dim")
            state = runs.follow(files, None, view.on_event, from_start=True, on_status=view.on_status)
    except KeyboardInterrupt:
        data = {"ok": False, "run_id": files.run_id, "state": runs.run_state(files), "detached": True}
        return CommandResult(data, f"stopped watching; run {files.run_id} goes on"
                                   f" (see: {command('runs', project.name)})", code=130)
    return _outcome(project, files, state, view, quiet=quiet)


def _outcome(project, files, state: str, view: _ProgressView, *, quiet: bool, notes=()) -> CommandResult:
    """The result of a run followed to its end: its summary, exit status and what to do next."""
    info = runs.run_info(files)
    code = runs.exit_code(state)
    data = {"ok": code == 0, "project": project.name, **info.to_dict(), "exit_code": code,
            "notes": list(notes)}
    text = f"run {files.run_id} {state} at step {info.step}" + (f"/{info.total_steps}" if info.total_steps else "")
    if info.output and state == "completed":
        text += f"\n  LoRA: {info.output}"
    if state == "crashed" and not quiet:
        view.say(f"the trainer exited without finishing; the end of {files.log.name}:", "red")
        for line in _log_tail(files.log):
            view.say("  " + line, "dim")
    if state in ("stopped", "crashed", "failed"):
        if info.message:
            text += f"\n  {info.message}"
        if state == "failed" and runs.never_started(files):  # nothing to resume
            text += f"\n  fix that, then start a new run: {command('train', project.name)}\n  log: {files.log}"
        else:
            text += f"\n  resume with: {command('resume', project.name, files.run_id)}\n  log: {files.log}"
    if quiet and state in ("failed", "crashed"):
        # --json: the progress view said nothing, so the failure's one line goes to stderr here.
        _say(f"error: run {files.run_id} {state}: "
             f"{info.message or 'the trainer exited without finishing'} (log: {files.log})")
    return CommandResult(data, text, code=code)
