"""CLI commands: init, projects (list), delete, repair."""

from __future__ import annotations

import sys

from loradeck.trainer.cli import CommandResult
from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.config.resolve import absolute_model
from loradeck.trainer.dataset import project as projects
from loradeck.trainer.errors import ProjectError
from loradeck.trainer.runs import live as live_runs
from loradeck.trainer.runs.live import stop_command


def register(sub, parent) -> None:
    p = sub.add_parser("init", parents=[parent], help="create a project")
    p.add_argument("name")
    p.add_argument("--trigger", dest="trigger_word", help="trigger word (e.g. 'sks person')")
    p.add_argument("--base-model", help="HF id, diffusers folder, .safetensors file or synthetic:tiny")
    p.add_argument("--caption-extension", help="caption file extension (default .txt)")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("projects", parents=[parent], help="list projects (damaged ones marked)")
    p.set_defaults(handler=cmd_projects)

    p = sub.add_parser("delete", parents=[parent], help="delete a project with everything in it",
                       description="Delete a project folder: originals, dataset, captions and runs. Refused"
                                   " while any of its runs is live (the error names the stop commands). Asks"
                                   " first at a terminal; scripts pass --yes.")
    p.add_argument("name")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask (needed when not at a terminal)")
    p.set_defaults(handler=cmd_delete)

    p = sub.add_parser("repair", parents=[parent], help="give a damaged project (no project.toml) a fresh one",
                       description="A project folder with originals/, dataset/ or runs/ but no project.toml is"
                                   " damaged: `loradeck projects` marks it. This writes a project.toml with"
                                   " default settings; nothing else changes.")
    p.add_argument("name")
    p.set_defaults(handler=cmd_repair)


def cmd_init(args) -> CommandResult:
    # A local model path given relative is stored absolute: it names the same model from anywhere.
    base_model = absolute_model(args.base_model) if args.base_model else None
    proj = projects.create_project(args.name, args.root, trigger_word=args.trigger_word,
                                   base_model=base_model, caption_extension=args.caption_extension)
    return CommandResult({"ok": True, "project": proj.name, "path": str(proj.path)},
                         f"created project {proj.name} at {proj.path}")


def cmd_projects(args) -> CommandResult:
    rows = []
    for proj in projects.list_projects(args.root):
        try:
            s = settings.load(proj.settings_file)
            base, trigger, problem = s.project.base_model, s.project.trigger_word, None
        except Exception as e:  # a broken project.toml must not hide the others
            base, trigger, problem = None, None, str(e)
        rows.append({"name": proj.name, "path": str(proj.path), "images": len(projects.dataset_images(proj)),
                     "base_model": base, "trigger_word": trigger, "problem": problem})
    for proj in projects.list_damaged(args.root):
        rows.append({"name": proj.name, "path": str(proj.path), "images": len(projects.dataset_images(proj)),
                     "base_model": None, "trigger_word": None, "damaged": True,
                     "problem": f"damaged: no project.toml (repair: {command('repair', proj.name)};"
                                f" remove: {command('delete', proj.name)})"})
    rows.sort(key=lambda r: r["name"].lower())
    for r in rows:
        r.setdefault("damaged", False)
    lines = [f"{r['name']:<24} {r['images']:>6} images  {r['base_model'] or r['problem']}" for r in rows]
    return CommandResult({"ok": True, "projects": rows}, "\n".join(lines) or "no projects")


def cmd_delete(args) -> CommandResult:
    project = projects.Project(projects.check_root(projects.resolve_root(args.root)),
                               projects.validate_name(args.name))
    if not project.exists() and not projects.is_damaged(project):
        projects.open_project(args.name, args.root)  # its error: no such project, with the hint
    try:
        live_runs.refuse_if_busy(project)  # before asking: a question that ends in a refusal wastes time
    except live_runs.ProjectBusy as e:
        return _refused(e, project)
    if not args.yes:
        if args.json or not sys.stdin.isatty():
            raise ProjectError(f"deleting project {project.name!r} needs --yes when not asked at a terminal",
                               hint=command("delete", project.name, "--yes"))
        if not _ask(f"Delete project {project.name!r} at {project.path} with its originals, dataset,"
                    " captions and runs? This cannot be undone. [y/N] "):
            return CommandResult({"ok": False, "project": project.name, "deleted": False}, "not deleted", code=1)
    try:
        live_runs.delete_project(project)
    except live_runs.ProjectBusy as e:  # a run started while we asked
        return _refused(e, project)
    return CommandResult({"ok": True, "project": project.name, "path": str(project.path), "deleted": True},
                         f"deleted project {project.name} ({project.path})")


def _refused(e, project) -> CommandResult:
    """A delete refused for live runs: one error line, and under --json the runs and stop commands."""
    line = e.one_line()
    print(f"error: {line}", file=sys.stderr)
    return CommandResult({"ok": False, "error": line, "project": project.name,
                          "runs": [r.to_dict() for r in e.runs],
                          "stop_commands": [stop_command(project, r) for r in e.runs]}, "", code=1)


def _ask(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_repair(args) -> CommandResult:
    project = projects.repair_project(args.name, args.root)
    return CommandResult({"ok": True, "project": project.name, "path": str(project.path),
                          "settings": str(project.settings_file)},
                         f"repaired project {project.name}: wrote {project.settings_file} with default settings"
                         " (edit it to set the base model and trigger word)")
