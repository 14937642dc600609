"""CLI commands: init, projects (list), config (show/set project.toml values)."""

from __future__ import annotations

from trainer import project as projects
from trainer import settings
from trainer.cli import CommandResult


def register(sub, parent) -> None:
    p = sub.add_parser("init", parents=[parent], help="create a project")
    p.add_argument("name")
    p.add_argument("--trigger", dest="trigger_word", help="trigger word (e.g. 'sks person')")
    p.add_argument("--base-model", help="HF id, diffusers folder, .safetensors file or synthetic:tiny")
    p.add_argument("--caption-extension", help="caption file extension (default .txt)")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("projects", parents=[parent], help="list projects")
    p.set_defaults(handler=cmd_projects)


def cmd_init(args) -> CommandResult:
    from trainer.run_config import absolute_model

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
    lines = [f"{r['name']:<24} {r['images']:>6} images  {r['base_model'] or r['problem']}" for r in rows]
    return CommandResult({"ok": True, "projects": rows}, "\n".join(lines) or "no projects")
