"""CLI command: `loradeck samples NAME [RUN] [--sheet]` (see trainer/cli/__init__.py for the conventions).

Lists a run's sample images by step and prompt, with the LoRA kept for each step (a checkpoint, the
final LoRA, or none), and with --sheet writes a labelled contact sheet PNG (steps × prompts) into the
run folder: the way to compare checkpoints on a terminal that cannot show images. The engine is
loradeck.trainer.runs.sample_grid; export the chosen step with `loradeck export NAME RUN --checkpoint STEP`.
"""

from __future__ import annotations

from loradeck.trainer.cli import CommandResult
from loradeck.trainer.cli_hint import command
from loradeck.trainer.dataset.project import open_project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs import sample_grid


def register(sub, parent) -> None:
    p = sub.add_parser("samples", parents=[parent],
                       help="a run's samples by step and prompt; --sheet writes a contact sheet PNG")
    p.add_argument("name", help="project")
    p.add_argument("run", nargs="?", help="run id or prefix (default: the newest run)")
    p.add_argument("--sheet", action="store_true",
                   help="write a labelled contact sheet (steps × prompts) as RUN/contact_sheet.png")
    p.set_defaults(handler=cmd_samples)


def cmd_samples(args) -> CommandResult:
    project = open_project(args.name, args.root)
    files = runs.find_run(project, args.run) if args.run else runs.latest_run(project)
    if files is None:
        raise LoradeckError(f"project {project.name!r} has no runs", hint=command("train", project.name))
    grid = sample_grid.collect(files.dir)
    data = {"ok": True, "project": project.name, **grid.to_dict()}
    if not grid.steps:
        raise LoradeckError(f"run {files.run_id} has no samples",
                            hint="train with sample prompts and --sample-every-steps N")
    lines = [f"{files.run_id}: {len(grid.steps)} step(s) × {len(grid.prompts)} prompt(s)"]
    lines += [f"  prompt {i + 1}: {p}" for i, p in enumerate(grid.prompts)]
    for step in grid.steps:
        have = sum((step, c) in grid.cells for c in range(len(grid.prompts)))
        lines.append(f"  step {step:>7}  {grid.lora_label(step):<5}  {have}/{len(grid.prompts)} sample(s)")
    if args.sheet:
        sheet = sample_grid.write_contact_sheet(grid)
        data["sheet"] = str(sheet)
        lines.append(f"contact sheet: {sheet}")
    exportable = [s for s in grid.steps if grid.export_choice(s)]
    if exportable:
        lines.append(f"export a step: {command('export', project.name, files.run_id, '--checkpoint')} STEP")
    return CommandResult(data, "\n".join(lines))
