"""CLI commands for a shared GPU box: gpus, cancel, requeue; and the --gpu / --queue placement of
train and resume (trainer/cli/cmd_train.py calls `placement_flags` and `place`).

    loradeck gpus [--json]                    every process on each GPU, and each GPU's free memory
    loradeck train NAME --queue [--gpu N|auto]   wait in the queue, start when the memory is free
    loradeck cancel NAME RUN                  take a queued run out of the queue
    loradeck requeue NAME RUN                 a new waiter for a queued run whose waiter was killed
"""

from __future__ import annotations

import contextlib
from typing import Any

from loradeck.trainer.cli import CommandResult
from loradeck.trainer.cli_hint import command
from loradeck.trainer.dataset import project as projects
from loradeck.trainer.gpu import processes as gpu_processes
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs import queue as run_queue


def register(sub, parent) -> None:
    p = sub.add_parser("gpus", parents=[parent], help="who is on which GPU: processes, users, free memory",
                       description="Every process on each visible GPU (user, pid, memory, command) and each"
                                   " GPU's free memory, from NVML and psutil.")
    p.set_defaults(handler=cmd_gpus)

    p = sub.add_parser("cancel", parents=[parent], help="take a queued run out of the queue")
    p.add_argument("name", help="project name")
    p.add_argument("run", help="run id, a unique prefix of it, or 'latest'")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("requeue", parents=[parent],
                       help="give a queued run whose waiter is gone (killed) a new waiter")
    p.add_argument("name", help="project name")
    p.add_argument("run", help="run id, a unique prefix of it, or 'latest'")
    p.set_defaults(handler=cmd_requeue)


def placement_flags(parser) -> None:
    """--gpu and --queue, for train and resume."""
    parser.add_argument("--gpu", metavar="INDEX|auto",
                        help="the GPU to train on (see: loradeck gpus); auto: the one with the most free memory"
                             " that fits the run's estimate. The trainer gets CUDA_VISIBLE_DEVICES")
    parser.add_argument("--queue", action="store_true",
                        help="wait in the queue (first in, first out) and start by itself when the run's"
                             " estimate fits the GPU's free memory; returns at once")


@contextlib.contextmanager
def gpu_env(args, cfg) -> Any:
    """Inside: os.environ gives a child the GPU(s) `--gpu` picks now (nothing without --gpu)."""
    chosen = gpu_processes.pick_gpus(cfg, gpu_processes.parse_gpu(getattr(args, "gpu", None)))
    with gpu_processes.child_env(gpu_processes.visible_env(chosen)):
        yield chosen


def queued_result(project, files, *, resumed: bool = False, gpu=None) -> CommandResult:
    info = run_queue.enqueue(project, files, gpu=gpu, resume=resumed)
    return _queued_text(project, files, info)


def _queued_text(project, files, info: dict[str, Any]) -> CommandResult:
    data = {"ok": True, "project": project.name, "run_id": files.run_id, "run_dir": str(files.dir),
            "state": "queued", "queue": info}
    text = (f"queued run {files.run_id}: {run_queue.queue_line(info)}\n"
            f"  it needs {gpu_processes.fmt_gib(info.get('need'))} free"
            f" on {'GPU ' + str(info['gpu']) if isinstance(info.get('gpu'), int) else 'a GPU (or the CPU)'}\n"
            f"  place: {command('runs', project.name)}\n"
            f"  cancel: {command('cancel', project.name, files.run_id)}")
    return CommandResult(data, text)


def cmd_gpus(args) -> CommandResult:
    report = gpu_processes.snapshot()
    data = {"ok": True, **report.to_dict()}
    return CommandResult(data, "\n".join(gpu_processes.report_lines(report)))


def _find(args):
    project = projects.open_project(args.name, args.root)
    return project, runs.find_run(project, args.run)


def cmd_cancel(args) -> CommandResult:
    project, files = _find(args)
    report = run_queue.cancel(files)
    return CommandResult(report, f"run {files.run_id} cancelled (it was queued)")


def cmd_requeue(args) -> CommandResult:
    project, files = _find(args)
    return _queued_text(project, files, run_queue.requeue(files))
