"""CLI commands: export, validate, convert, pack, shared (see trainer/cli/__init__.py for the conventions).

    loradeck export NAME [RUN] [--checkpoint STEP|latest] [--to DIR] [--name OUT] [--on-conflict refuse|version]
    loradeck validate FILE [--base MODEL] [--no-load-check] [--events]
    loradeck convert IN OUT [--to kohya|diffusers] [--overwrite]
    loradeck pack create NAME ADAPTER[=WEIGHT]... [--to DIR] [--description TEXT] [--preview PNG]
    loradeck pack show NAME [--dir DIR]
    loradeck shared list [--dir DIR]
    loradeck shared show NAME [--dir DIR]
    loradeck shared import NAME PROJECT [--dir DIR] [--dry-run]

The shared folder (--to / --dir) defaults to the project's [export] dest (with --project, or the
project named on the command), else the user config (loradeck.trainer.config.user_config).
"""

from __future__ import annotations

import sys
from pathlib import Path

from loradeck.trainer.cli import CommandResult
from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset.project import open_project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import ProgressEcho, dumps, make_event
from loradeck.trainer.lora.convert import convert_file
from loradeck.trainer.lora.packs import create_pack, list_packs, parse_adapter_spec, read_pack, resolve_pack
from loradeck.trainer.lora.publish import export_run, resolve_destination, resolve_on_conflict
from loradeck.trainer.lora.shared_folder import (
    describe_adapter,
    import_into_project,
    list_adapters,
    read_sidecar,
    sidecar_path,
)
from loradeck.trainer.lora.validate import LOAD_PHASES, TASK, validate

CONFLICT_CHOICES = ("refuse", "version")


def register(sub, parent) -> None:
    """Add this area's subcommands to `sub` (argparse subparsers); `parent` has --root/--json."""
    p = sub.add_parser("export", parents=[parent], help="validate a run's LoRA and publish it to the shared folder")
    p.add_argument("name", help="project")
    p.add_argument("run", nargs="?", help="run id or prefix (default: the newest run with a final LoRA)")
    p.add_argument("--checkpoint", metavar="STEP|latest",
                   help="publish the checkpoint saved at this step instead of the final LoRA (any run state)")
    p.add_argument("--to", help="destination folder (default: project [export] dest, else user config)")
    p.add_argument("--name", dest="out_name", metavar="OUT",
                   help="published name (default: the run's output_name; OUT-stepN for a checkpoint)")
    p.add_argument("--on-conflict", choices=CONFLICT_CHOICES,
                   help="when the name exists: refuse (default) or publish as OUT-v2, OUT-v3, ...")
    p.add_argument("--base", help="base model for the load check (default: the run's base model)")
    p.add_argument("--no-load-check", action="store_true", help="skip loading through diffusers")
    p.add_argument("--description", default="", help="description for the sidecar")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("validate", parents=[parent],
                       help="check a LoRA file against the kohya/A1111/ComfyUI rules and load it in diffusers")
    p.add_argument("file")
    p.add_argument("--base", help="base model (folder or hub id in the local cache) to load it on")
    p.add_argument("--no-load-check", action="store_true", help="check the rules only")
    p.add_argument("--events", action="store_true",
                   help="print task events as JSON lines (for a parent process): the load check's phases, then"
                        " the report in task_finished")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("convert", parents=[parent], help="convert a LoRA between diffusers/peft and kohya layouts")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--to", choices=("kohya", "diffusers"), help="target layout (default: the other one)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(handler=cmd_convert)

    pack = sub.add_parser("pack", parents=[parent], help="packs of published adapters with weights")
    pack_sub = pack.add_subparsers(dest="pack_command", metavar="ACTION", required=True)
    p = pack_sub.add_parser("create", parents=[parent], help="write NAME.pack.json in the shared folder")
    p.add_argument("pack_name", metavar="NAME")
    p.add_argument("adapters", nargs="+", metavar="ADAPTER[=WEIGHT]", help="published adapter names, weight 1.0 by default")
    p.add_argument("--to", help="shared folder (default: --project's [export] dest, else user config)")
    p.add_argument("--project", help="take the shared folder from this project's [export] dest")
    p.add_argument("--description", default="")
    p.add_argument("--preview", help="PNG to use as the pack's preview (default: the first adapter's)")
    p.add_argument("--on-conflict", choices=CONFLICT_CHOICES)
    p.set_defaults(handler=cmd_pack_create)
    p = pack_sub.add_parser("show", parents=[parent], help="show a pack and check its adapters")
    p.add_argument("pack_name", metavar="NAME")
    _folder_options(p)
    p.set_defaults(handler=cmd_pack_show)

    shared = sub.add_parser("shared", parents=[parent], help="what is published in the shared folder")
    shared_sub = shared.add_subparsers(dest="shared_command", metavar="ACTION", required=True)
    p = shared_sub.add_parser("list", parents=[parent], help="adapters and packs in the shared folder")
    _folder_options(p)
    p.set_defaults(handler=cmd_shared_list)
    p = shared_sub.add_parser("show", parents=[parent], help="one published adapter's sidecar")
    p.add_argument("adapter")
    _folder_options(p)
    p.set_defaults(handler=cmd_shared_show)
    p = shared_sub.add_parser("import", parents=[parent],
                              help="bring a published adapter's settings (trigger, base, training) into a project")
    p.add_argument("adapter")
    p.add_argument("project")
    p.add_argument("--dir", help="shared folder (default: the project's [export] dest, else user config)")
    p.add_argument("--dry-run", action="store_true", help="show what would change")
    p.set_defaults(handler=cmd_shared_import)


def _folder_options(p) -> None:
    p.add_argument("--dir", help="shared folder (default: --project's [export] dest, else user config)")
    p.add_argument("--project", help="take the shared folder from this project's [export] dest")


def _shared_folder(args, folder: str | None, project_name: str | None, *, flag: str = "--dir",
                   writable: bool = False):
    """The shared folder of a pack/shared command; only `pack create` needs to write to it."""
    settings = project_dir = None
    if project_name and not folder:
        project = open_project(project_name, args.root)
        settings, project_dir = settings_mod.load(project.settings_file), project.path
    return resolve_destination(folder, settings=settings, flag=flag, writable=writable, project_dir=project_dir)


# ------------------------------------------------------------------------------------------ handlers

def cmd_export(args) -> CommandResult:
    result = export_run(args.name, args.run, root=args.root, to=args.to, name=args.out_name,
                        on_conflict=args.on_conflict, base_model=args.base, load_check=not args.no_load_check,
                        description=args.description, checkpoint=args.checkpoint)
    chosen = None
    if not args.run:  # say which run was meant (loradeck.trainer.lora.publish picked it)
        chosen = (f"the newest run of {args.name} with checkpoints" if args.checkpoint
                  else f"the newest run of {args.name} with a final LoRA")
        print(f"run {result.run}: {chosen}", file=sys.stderr)
    what = f"run {result.run}" + (f" checkpoint at step {result.step}" if result.step is not None else "")
    lines = [f"published {result.name} -> {result.adapter}" + (" (new version)" if result.versioned else ""),
             f"  {what}; {result.size / 1e6:.1f} MB; sshs_model_hash {result.sshs_model_hash[:12]}",
             f"  sidecar {result.sidecar}" + (f"; preview {result.preview}" if result.preview else "; no preview"),
             f"  load check {result.load_check}"]
    lines += [f"  warning: {w}" for w in result.warnings]
    return CommandResult({"ok": True, **result.to_dict(), "chosen": chosen}, "\n".join(lines))


def cmd_validate(args) -> CommandResult | int:
    if not Path(args.file).is_file():
        what = "is a folder, not a LoRA file" if Path(args.file).is_dir() else "does not exist"
        raise LoradeckError(f"{args.file} {what}")
    echo = ProgressEcho(sys.stdout) if args.events else None

    def emit(event: dict) -> None:
        echo(dumps(event) + "\n")

    if echo is not None:
        emit(make_event("task_started", task=TASK, total=len(LOAD_PHASES)))
    report = validate(args.file, base_model=args.base, load_check=not args.no_load_check,
                      on_event=emit if echo is not None else None)
    text = report.summary()
    hint = command("convert", args.file, "OUT.safetensors", "--to", "kohya") if report.layout == "diffusers" else None
    if hint:
        text += f"\n  hint: {hint}"
    if not report.ok:  # the report is the output; stderr still gets the one-line verdict
        errors = report.errors
        first = errors[0].message.removeprefix(f"{Path(args.file).name}: ")
        line = f"error: {args.file} is not a valid LoRA: {first}"
        if len(errors) > 1:
            line += f" (and {len(errors) - 1} more problem(s), listed above)"
        print(line + (f"; try: {hint}" if hint and "loradeck convert" not in line else ""), file=sys.stderr)
    code = 0 if report.ok else 1
    if echo is not None:  # the report travels in the last event; nothing else goes to stdout
        emit(make_event("task_finished", task=TASK, status="completed", report=report.to_dict()))
        return code
    return CommandResult(report.to_dict(), text, code)


def cmd_convert(args) -> CommandResult:
    info = convert_file(args.input, args.output, to=args.to, overwrite=args.overwrite)
    return CommandResult({"ok": True, **info},
                         f"converted {info['modules']} modules from {info['from']} to {info['to']} layout:"
                         f" {info['output']}")


def cmd_pack_create(args) -> CommandResult:
    dest = _shared_folder(args, args.to, args.project, flag="--to", writable=True)
    adapters = [parse_adapter_spec(s) for s in args.adapters]
    out = create_pack(dest.path, args.pack_name, adapters, description=args.description, preview=args.preview,
                      on_conflict=resolve_on_conflict(args.on_conflict))
    listing = ", ".join(f"{a['name']}={a['weight']:g}" for a in out["pack"]["adapters"])
    return CommandResult({"ok": True, **out}, f"wrote pack {out['pack']['name']} ({listing}): {out['path']}")


def cmd_pack_show(args) -> CommandResult:
    dest = _shared_folder(args, args.dir, args.project)
    path = resolve_pack(dest.path, args.pack_name)
    doc = read_pack(path)
    lines = [f"{doc['name']}: {doc.get('description') or '(no description)'}",
             *(f"  {a['name']}  weight {a['weight']:g}" for a in doc["adapters"])]
    if doc.get("activation_text"):
        lines.append(f"  activation text: {doc['activation_text']}")
    return CommandResult({"ok": True, "path": str(path), "pack": doc}, "\n".join(lines))


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def cmd_shared_list(args) -> CommandResult:
    dest = _shared_folder(args, args.dir, args.project)
    adapters = list_adapters(dest.path)
    packs = list_packs(dest.path)
    rows = [("NAME", "BASE", "TRIGGER", "SIZE", "DATE", "WHO")]
    rows += [(a.name, a.base_model or "?", a.trigger or "-", _size(a.size), a.date[:16].replace("T", " "), a.who)
             for a in adapters]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{dest.path} ({len(adapters)} adapters, {len(packs)} packs)"]
    if adapters:
        lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for p in packs:
        lines.append(f"  pack {p['name']}: " + (p.get("problem") or ", ".join(f"{a}={w:g}" for a, w in p["adapters"])))
    return CommandResult({"ok": True, "folder": str(dest.path), "adapters": [a.to_dict() for a in adapters],
                          "packs": packs},
                         "\n".join(lines))


def cmd_shared_show(args) -> CommandResult:
    dest = _shared_folder(args, args.dir, args.project)
    entry = describe_adapter(dest.path, args.adapter)
    sidecar = read_sidecar(sidecar_path(dest.path, args.adapter))
    text = "\n".join(f"{k}: {v}" for k, v in entry.to_dict().items() if v not in (None, ""))
    return CommandResult({"ok": True, "adapter": entry.to_dict(), "sidecar": sidecar}, text)


def cmd_shared_import(args) -> CommandResult:
    project = open_project(args.project, args.root)
    dest = resolve_destination(args.dir, settings=settings_mod.load(project.settings_file), flag="--dir",
                               writable=False, project_dir=project.path)
    out = import_into_project(project, dest.path, args.adapter, dry_run=args.dry_run)
    verb = "would set" if args.dry_run else "set"
    lines = [f"would import {args.adapter} into {project.name} (dry run: nothing changed)" if args.dry_run
             else f"imported {args.adapter} into {project.name}"]
    lines += [f"  {verb} [project] {k} = {v!r}" for k, v in out["project"].items()]
    lines += [f"  {verb} [train] {k} = {v!r}" for k, v in out["train"].items()]
    if not out["project"] and not out["train"]:
        lines.append("  nothing to change: the project already has these settings")
    return CommandResult({"ok": True, **out}, "\n".join(lines))
