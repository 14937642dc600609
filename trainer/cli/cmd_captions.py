"""CLI commands: `loradeck captions ...` (see trainer/cli/__init__.py for the conventions).

    captions list NAME [--missing]                 caption status of every dataset image
    captions set NAME IMAGE TEXT                   set one caption ('' removes it)
    captions trigger NAME [WORD] [--all] [--dry-run]
    captions replace NAME FIND REPLACEMENT [--regex] [-i] [--dry-run]
    captions tags NAME [--top N]                   tag frequency table
    captions export NAME [--to FILE]               metadata.jsonl (diffusers imagefolder)
    captions export NAME --format imagefolder|kohya --to DIR   images + captions for other tools
    captions import NAME FILE [--overwrite] [--dry-run]
    captions undo NAME [--list]                    undo the last batch edit (loradeck.trainer.dataset.caption_journal)
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict

from loradeck.trainer.cli import CommandResult
from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset import caption_journal, caption_ops
from loradeck.trainer.dataset.export import export_dataset
from loradeck.trainer.dataset.project import open_project
from loradeck.trainer.errors import LoradeckError


def register(sub, parent) -> None:
    top = sub.add_parser("captions", parents=[parent], help="caption files: list, trigger word, find/replace,"
                         " tags, metadata.jsonl")
    cmds = top.add_subparsers(dest="captions_command", metavar="ACTION", required=True)

    p = cmds.add_parser("list", parents=[parent], help="caption status of every dataset image")
    p.add_argument("name")
    p.add_argument("--missing", action="store_true", help="only images training would see uncaptioned")
    p.set_defaults(handler=cmd_list)

    p = cmds.add_parser("set", parents=[parent], help="set one image's caption ('' removes it)")
    p.add_argument("name")
    p.add_argument("image", help="file name in dataset/")
    p.add_argument("text")
    p.set_defaults(handler=cmd_set)

    p = cmds.add_parser("trigger", parents=[parent], help="make the trigger word the first tag of every caption")
    p.add_argument("name")
    p.add_argument("word", nargs="?", help="default: [project] trigger_word")
    p.add_argument("--all", action="store_true", help="also caption uncaptioned images with the word")
    p.add_argument("--remove", action="store_true", help="remove the word from every caption instead")
    p.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    p.set_defaults(handler=cmd_trigger)

    p = cmds.add_parser("replace", parents=[parent], help="find/replace in every caption")
    p.add_argument("name")
    p.add_argument("find")
    p.add_argument("replacement")
    p.add_argument("--regex", action="store_true", help="FIND is a Python regular expression (\\1 in REPLACEMENT)")
    p.add_argument("-i", "--ignore-case", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    p.set_defaults(handler=cmd_replace)

    p = cmds.add_parser("tags", parents=[parent], help="tag frequency table")
    p.add_argument("name")
    p.add_argument("--top", type=int, default=0, help="only the N most frequent")
    p.set_defaults(handler=cmd_tags)

    p = cmds.add_parser("export", parents=[parent], help="write metadata.jsonl, or the whole dataset as a Hugging"
                        " Face imagefolder or a kohya dataset")
    p.add_argument("name")
    p.add_argument("--to", dest="dest", help="file or folder (default: dataset/metadata.jsonl); with --format, a new"
                                             " or empty folder")
    p.add_argument("--format", dest="format", choices=("metadata", "imagefolder", "kohya"), default="metadata",
                   help="metadata: only metadata.jsonl (default); imagefolder: originals + metadata.jsonl;"
                        " kohya: N_name/ repeat folders with .txt captions + dataset.toml")
    p.set_defaults(handler=cmd_export)

    p = cmds.add_parser("import", parents=[parent], help="set captions from a metadata.jsonl")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--overwrite", action="store_true", help="replace captions that differ")
    p.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    p.set_defaults(handler=cmd_import)

    p = cmds.add_parser("undo", parents=[parent],
                        help="restore the captions the last batch edit changed (find/replace, trigger,"
                             " captioning, import); again for the one before")
    p.add_argument("name")
    p.add_argument("--list", action="store_true", help="list the batches that can be undone, newest first")
    p.set_defaults(handler=cmd_undo)


def _project(args):
    return open_project(args.name, args.root)


def _edit_result(project, result, verb: str) -> CommandResult:
    data = {"ok": True, "project": project.name, **result.to_dict()}
    head = (f"{'would change' if not result.applied else verb} {len(result.changes)} caption(s),"
            f" {result.unchanged} unchanged, {len(result.skipped)} skipped")
    lines = [head]
    for c in result.changes:
        lines.append(f"{c.caption_file}:\n  - {c.before if c.before is not None else '(none)'}\n  + {c.after}")
    lines += [f"skipped {image}: {why}" for image, why in result.skipped]
    lines += [f"no image for {name}" for name in result.unmatched]
    lines += [f"line {n}: {why}" for n, why in result.bad_lines]
    if result.applied and result.changes:
        lines.append(f"undo: {command('captions', 'undo', project.name)}")
    return CommandResult(data, "\n".join(lines))


def cmd_list(args) -> CommandResult:
    project = _project(args)
    rows = caption_ops.uncaptioned(project) if args.missing else caption_ops.list_captions(project)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    text = "\n".join(f"{r.status:<17} {r.image}  {r.text or ''}".rstrip() for r in rows)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no images"
    return CommandResult({"ok": True, "project": project.name, "counts": counts,
                          "images": [asdict(r) for r in rows]}, (text + "\n" if text else "") + summary)


def cmd_set(args) -> CommandResult:
    project = _project(args)
    change = caption_ops.set_caption(project, args.image, args.text)
    return CommandResult({"ok": True, "project": project.name, "change": asdict(change)},
                         f"{change.caption_file}: {change.after or '(removed)'}")


def cmd_trigger(args) -> CommandResult:
    project = _project(args)
    word = args.word or settings.load(project.settings_file).project.trigger_word
    if not word:
        raise LoradeckError("no trigger word given and none set in project.toml",
                            hint=command("captions", "trigger", project.name, "WORD"))
    if args.remove:
        if args.all:
            raise LoradeckError("--all and --remove do not go together")
        result = caption_ops.remove_trigger(project, word, dry_run=args.dry_run)
    else:
        result = caption_ops.set_trigger(project, word, include_uncaptioned=args.all, dry_run=args.dry_run)
    return _edit_result(project, result, "changed")


def cmd_replace(args) -> CommandResult:
    project = _project(args)
    result = caption_ops.replace_text(project, args.find, args.replacement, regex=args.regex,
                                      ignore_case=args.ignore_case, dry_run=args.dry_run)
    return _edit_result(project, result, "changed")


def cmd_tags(args) -> CommandResult:
    project = _project(args)
    table = caption_ops.tag_frequency(project)
    if args.top > 0:
        table = table[:args.top]
    text = "\n".join(f"{n:>6}  {tag}" for tag, n in table) or "no tags"
    return CommandResult({"ok": True, "project": project.name,
                          "tags": [{"tag": t, "count": n} for t, n in table]}, text)


def cmd_export(args) -> CommandResult:
    project = _project(args)
    if args.format != "metadata":
        if not args.dest:
            raise LoradeckError(f"--format {args.format} needs --to DIR (a new or empty folder)")
        out = export_dataset(project, args.dest, args.format)
        return CommandResult({"ok": True, "project": project.name, **out},
                             f"wrote {out['images']} image(s), {out['captioned']} with a caption, as {args.format}"
                             f" to {out['path']}")
    out = caption_ops.export_metadata(project, args.dest)
    return CommandResult({"ok": True, "project": project.name, **out},
                         f"wrote {out['rows']} row(s) to {out['path']} ({out['missing']} without a caption)")


def cmd_import(args) -> CommandResult:
    project = _project(args)
    result = caption_ops.import_metadata(project, args.file, overwrite=args.overwrite, dry_run=args.dry_run)
    out = _edit_result(project, result, "set")
    if not (result.changes or result.unchanged or result.skipped):
        # Not one row named a dataset image: a wrong file or a wrong project, not a success.
        out.data["ok"], out.code = False, 1
        print(f"error: nothing imported from {args.file}: {len(result.bad_lines)} bad line(s),"
              f" {len(result.unmatched)} row(s) naming no image in {project.name}'s dataset", file=sys.stderr)
    return out


def cmd_undo(args) -> CommandResult:
    project = _project(args)
    if args.list:
        batches = caption_journal.list_batches(project)
        lines = [f"{i + 1:>3}. {time.strftime('%Y-%m-%d %H:%M', time.localtime(b.time))}  {b.label}"
                 f"  ({len(b.changes)} file(s))" for i, b in enumerate(batches)]
        return CommandResult({"ok": True, "project": project.name, "batches": [b.summary() for b in batches]},
                             "\n".join(lines) or "nothing to undo")
    result = caption_journal.undo_last(project)
    lines = [f"undid {result.label}: restored {len(result.restored)} caption(s)"
             + (f", {len(result.conflicts)} edited since and kept" if result.conflicts else "")
             + f"; {result.remaining} more batch(es) can be undone"]
    lines += [f"kept {name}: changed after that batch" for name in result.conflicts]
    return CommandResult({"ok": True, "project": project.name, **result.to_dict()}, "\n".join(lines))
