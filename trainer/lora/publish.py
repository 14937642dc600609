"""Publish a finished adapter to the team's shared folder: validated, atomic, with sidecars.

    resolve_destination()   --to DIR, else project.toml [export] dest, else the user config
    export_run()            a run's final LoRA -> validate -> publish_adapter()
    publish_adapter()       any kohya LoRA file -> NAME.safetensors + NAME.json (+ NAME.preview.png)

Atomicity: every file is first written in full to a hidden temporary in the destination folder
(`.loradeck-tmp-*.part`, never a name a front end picks up) and fsynced; only then does the adapter
get its final name, by a hard link that fails if the name exists (so two artists publishing the same
name at once cannot overwrite each other), then the sidecar and preview are renamed into place and
the folder is fsynced. Any failure before that (full disk, I/O error, interrupt) removes the
temporaries and leaves the folder as it was. An existing name is refused, or versioned (NAME-v2, ...).

Pure Python except the optional diffusers load check, which `isolate=True` runs in a subprocess (the
TUI calls this module from worker threads and must not import torch).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from loradeck.trainer.atomic import StagedFile, fsync_dir, link_no_clobber, sweep_stale_temporaries
from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.config.resolve import read_toml
from loradeck.trainer.config.user_config import load_user_config
from loradeck.trainer.dataset.caption_ops import tag_frequency
from loradeck.trainer.dataset.project import IMAGE_EXTENSIONS, absolute_path, open_project
from loradeck.trainer.errors import ConfigError, LoradeckError
from loradeck.trainer.events import read_all
from loradeck.trainer.lora.file_format import (
    copy_with_metadata,
    file_model_hash,
    kohya_metadata,
    legacy_hash,
    read_header,
)
from loradeck.trainer.lora.shared_folder import (
    ADAPTER_SUFFIX,
    MAX_VERSION,
    adapter_path,
    build_sidecar,
    candidate_names,
    name_problem,
    now_iso,
    preview_path,
    publish_mode,
    sidecar_path,
)
from loradeck.trainer.lora.validate import InvalidLoraError, base_available, check_rules, validate
from loradeck.trainer.runs import lifecycle as runs_mod
from loradeck.trainer.runs.files import RunFiles

ON_CONFLICT = ("refuse", "version")


# How hints name the choices a user can change: the CLI's options by default; a front end with its
# own fields (the TUI's export dialog) passes `wording` with its names for the same keys.
CLI_WORDING = {"name": "--name", "version": "--on-conflict version"}


def _words(wording: dict[str, str] | None) -> dict[str, str]:
    return {**CLI_WORDING, **(wording or {})}


class PublishError(LoradeckError):
    """A publish that could not happen (nothing was left in the destination)."""


@dataclass
class Destination:
    path: Path
    source: str  # "--to", "project", "user config"


@dataclass
class PublishResult:
    name: str
    adapter: str
    sidecar: str
    preview: str | None
    destination: str
    destination_source: str
    sshs_model_hash: str
    sha256: str
    size: int
    versioned: bool = False
    run: str | None = None
    step: int | None = None  # the checkpoint's step; None for the run's final LoRA
    load_check: str = "not run"
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------- destination

def resolve_destination(to: str | os.PathLike | None = None, *, settings=None, user=None,
                        flag: str = "--to", writable: bool = True,
                        project_dir: str | os.PathLike | None = None) -> Destination:
    """Where to publish: `to`, else the project's [export] dest, else the user config's [export] dest.

    `settings` is a loradeck.trainer.config.project_settings.Settings (or None), `user` a loradeck.trainer.config.user_config.UserConfig (loaded
    when None). The folder comes back absolute: a relative `to` is relative to the current folder,
    a relative project dest to the project folder (`project_dir`), a relative user-config dest to
    the user config's folder. Raises PublishError when
    none is set or the folder does not exist (a missing network mount must not become a local folder).
    `flag` names the option `to` came from in messages; `writable=False` is for commands that only
    read the folder (listing a teammate's read-only share must work).
    """
    if to:
        dest = Destination(absolute_path(to), flag)
    elif settings is not None and settings.export.dest:
        dest = Destination(absolute_path(settings.export.dest, project_dir), "project")
    else:
        user = user or load_user_config()
        if not user.export_dest:
            raise PublishError("no destination to publish to",
                               hint=f"pass {flag} DIR, set [export] dest in project.toml, or in {user.path}")
        dest = Destination(absolute_path(user.export_dest, Path(user.path).expanduser().parent), "user config")
    if not dest.path.is_dir():
        raise PublishError(f"destination {dest.path} (from {dest.source}) does not exist or is not a folder",
                           hint="create it or mount the shared folder first")
    if writable and not os.access(dest.path, os.W_OK | os.X_OK):
        raise PublishError(f"destination {dest.path} is not writable by you")
    return dest


def resolve_on_conflict(choice: str | None, *, settings=None, user=None) -> str:
    """--on-conflict, else project.toml [export] on_conflict, else the user config, else refuse."""
    if choice:
        value = choice
    elif settings is not None and settings.export.on_conflict != "refuse":
        value = settings.export.on_conflict
    elif user is not None and user.on_conflict:
        value = user.on_conflict
    else:
        value = "refuse"
    if value not in ON_CONFLICT:
        raise PublishError(f"on-conflict must be refuse or version, got {value!r}")
    return value


def check_name(name: str) -> str:
    """`name` if it may name a published adapter (trainer.lora.shared_folder.name_problem), else PublishError."""
    problem = name_problem(name)
    if problem:
        raise PublishError(problem)
    return name


class _HashingWriter:
    """Wraps a binary file; sha256 and byte count of everything written."""

    def __init__(self, fh):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)


# ---------------------------------------------------------------------------------------- publish

def publish_metadata(src: Path, fill: dict[str, str] | None = None) -> dict[str, str]:
    """The header metadata a published copy of `src` carries: its own, plus `fill` for keys it lacks
    (the file's own values always win), plus hashes when it has none."""
    _, metadata = read_header(src)
    meta = {str(k): v for k, v in metadata.items() if isinstance(v, str)}
    for key, value in (fill or {}).items():
        meta.setdefault(key, value)
    if "sshs_model_hash" not in meta:
        meta["sshs_model_hash"] = file_model_hash(src)
    if "sshs_legacy_hash" not in meta:
        meta["sshs_legacy_hash"] = legacy_hash(src, meta)
    return meta


def publish_adapter(src: str | os.PathLike, dest: Destination | str | os.PathLike, name: str, *,
                    on_conflict: str = "refuse", fill_metadata: dict[str, str] | None = None,
                    preview: str | os.PathLike | None = None, who: str | None = None,
                    project: str | None = None, run: str | None = None, description: str = "",
                    wording: dict[str, str] | None = None) -> PublishResult:
    """Publish the kohya LoRA `src` as NAME in `dest`, with its sidecar and preview (see module doc).

    The tensor bytes are copied unchanged; the header gets `fill_metadata` for keys it lacks. The copy
    is checked against the LoRA rules before it gets its name. Raises PublishError (nothing left behind)
    when the name is taken and `on_conflict` is "refuse", or on any write failure.
    """
    src = Path(src)
    if not isinstance(dest, Destination):
        dest = Destination(Path(dest), "--to")
    folder = dest.path
    check_name(name)
    if on_conflict not in ON_CONFLICT:
        raise PublishError(f"on-conflict must be refuse or version, got {on_conflict!r}")
    if on_conflict == "refuse" and os.path.lexists(adapter_path(folder, name)):
        raise PublishError(f"{adapter_path(folder, name)} already exists",
                           hint=f"choose another {_words(wording)['name']}, or {_words(wording)['version']}"
                                " to publish it as a new version")
    who = who or load_user_config().who
    metadata = publish_metadata(src, fill_metadata)
    mode = publish_mode()
    sweep_stale_temporaries(folder)

    temps: list[StagedFile] = []
    try:
        adapter_tmp = StagedFile(folder)
        temps.append(adapter_tmp)
        writer_box: dict[str, _HashingWriter] = {}

        def write_adapter(fh):
            writer_box["w"] = _HashingWriter(fh)
            copy_with_metadata(src, writer_box["w"], metadata)

        adapter_tmp.write(write_adapter, mode)
        report = check_rules(adapter_tmp.path)
        if not report.ok:
            raise InvalidLoraError(report)
        size, sha256 = writer_box["w"].size, writer_box["w"].sha.hexdigest()
        preview_tmp = None
        if preview is not None:
            preview_tmp = StagedFile(folder)
            temps.append(preview_tmp)
            preview_bytes = Path(preview).read_bytes()
            preview_tmp.write(lambda fh: fh.write(preview_bytes), mode)
        created = now_iso()

        def sidecar_text(final_name: str) -> bytes:
            doc = build_sidecar(metadata, name=final_name, size=size, sha256=sha256, created=created, who=who,
                                preview=preview_path(folder, final_name).name if preview_tmp else None,
                                project=project, run=run, description=description)
            return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

        # Commit: claim a name with the adapter, then write the sidecar for that name and move it in.
        for final_name in candidate_names(name, on_conflict):
            check_name(final_name)
            if link_no_clobber(adapter_tmp.path, adapter_path(folder, final_name)):
                adapter_tmp.placed = True
                break
            if on_conflict == "refuse":
                raise PublishError(f"{adapter_path(folder, final_name)} already exists",
                                   hint=f"choose another {_words(wording)['name']}, or {_words(wording)['version']}")
        else:
            raise PublishError(f"{name}: no free version name up to -v{MAX_VERSION}")
        placed_adapter = adapter_path(folder, final_name)
        sidecar_tmp = None
        try:
            sidecar_tmp = StagedFile(folder)
            temps.append(sidecar_tmp)
            text = sidecar_text(final_name)
            sidecar_tmp.write(lambda fh: fh.write(text), mode)
            os.replace(sidecar_tmp.path, sidecar_path(folder, final_name))
            sidecar_tmp.placed = True
            if preview_tmp is not None:
                os.replace(preview_tmp.path, preview_path(folder, final_name))
                preview_tmp.placed = True
        except BaseException:
            # The adapter is ours (the link refused to replace anything): take it back with its sidecar.
            with contextlib.suppress(OSError):
                placed_adapter.unlink()
            for t, final in ((sidecar_tmp, sidecar_path(folder, final_name)),
                             (preview_tmp, preview_path(folder, final_name))):
                if t is not None and t.placed:
                    with contextlib.suppress(OSError):
                        final.unlink()
            raise
        fsync_dir(folder)
    except OSError as e:
        what = "the destination is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        raise PublishError(f"publishing {name} to {folder} failed: {what}; nothing was published") from e
    finally:
        for t in temps:
            t.discard()
    return PublishResult(
        name=final_name, adapter=str(placed_adapter), sidecar=str(sidecar_path(folder, final_name)),
        preview=str(preview_path(folder, final_name)) if preview_tmp is not None else None,
        destination=str(folder), destination_source=dest.source, sshs_model_hash=metadata["sshs_model_hash"],
        sha256=sha256, size=size, versioned=final_name != name, run=run)


# ------------------------------------------------------------------------------------ runs -> file

def _config_of(files: RunFiles) -> dict[str, Any]:
    """The run's config.toml as written: its keys and [dataset] table, read by the config module's one
    TOML reader. Lenient on purpose: a run from an older version, or made by hand, still exports; keys
    the file leaves out stay out (so a missing output_name names the export after the project)."""
    if not files.config.is_file():
        raise PublishError(f"run {files.run_id} has no config.toml")
    try:
        return read_toml(files.config)
    except ConfigError as e:
        raise PublishError(f"run {files.run_id}: cannot read config.toml ({e})") from None


def _output_name(config: dict[str, Any]) -> str:
    return str(config.get("output_name") or "lora")


def _output_of(files: RunFiles, config: dict[str, Any]) -> Path | None:
    out = files.output(str(config.get("output_name", "lora")))
    return out if out.is_file() else None


def find_run_output(project, run: str | None = None) -> tuple[Path, dict[str, Any], Path]:
    """(run folder, its config, its final LoRA). `run` is an id, a unique prefix or "latest"; without
    it, the newest run that has a final LoRA (a newer run still training or failed is skipped)."""
    if run:
        files = runs_mod.find_run(project, run)
        config = _config_of(files)
        output = _output_of(files, config)
        if output is None:
            state = runs_mod.run_state(files)
            hint = (f"it is {state}: resume it with `{command('resume', project.name, files.run_id)}`, or export"
                    " another run" if state in ("stopped", "failed", "crashed")
                    else "wait for it to finish, or export another run")
            raise PublishError(f"run {files.run_id} has no final LoRA yet ({config.get('output_name', 'lora')}"
                               f"{ADAPTER_SUFFIX})", hint=hint)
        return files.dir, config, output
    for files in reversed(runs_mod.run_folders(project)):
        config = _config_of(files)
        output = _output_of(files, config)
        if output is not None:
            return files.dir, config, output
    raise PublishError(f"project {project.name!r} has no finished run with a final LoRA",
                       hint=f"train one with: {command('train', project.name)}")


def run_checkpoints(run_dir: Path, config: dict[str, Any]) -> dict[int, Path]:
    """{step: file} of the kohya-format LoRA files the trainer saved during the run (checkpoints/)."""
    return RunFiles(run_dir).checkpoint_files(_output_name(config))


def checkpoints_of(run_dir: Path) -> dict[int, Path]:
    """`run_checkpoints` of a run folder, reading its config; {} where the config cannot be read."""
    try:
        return run_checkpoints(run_dir, _config_of(RunFiles(run_dir)))
    except PublishError:
        return {}


def find_run_checkpoint(project, run: str | None, checkpoint: str | int) -> tuple[Path, dict[str, Any], int, Path]:
    """(run folder, its config, step, file) of an intermediate checkpoint: `checkpoint` is a step number
    or "latest". Without `run`, the newest run that has checkpoints. Any run state will do: a stopped or
    crashed run's checkpoints are complete files (each is written atomically)."""
    latest = str(checkpoint).lower() == "latest"
    if not latest and not str(checkpoint).isdigit():
        raise PublishError(f"checkpoint must be a step number or 'latest', not {checkpoint!r}")
    candidates = [runs_mod.find_run(project, run)] if run else list(reversed(runs_mod.run_folders(project)))
    for files in candidates:
        config = _config_of(files)
        found = run_checkpoints(files.dir, config)
        if not found:
            if run:
                raise PublishError(f"run {files.run_id} has no checkpoints",
                                   hint="train with --save-every-steps N or --save-every-epochs N")
            continue
        step = max(found) if latest else int(checkpoint)
        if step not in found:
            raise PublishError(f"run {files.run_id} has no checkpoint at step {step}",
                               hint="it has steps " + ", ".join(str(k) for k in sorted(found)))
        return files.dir, config, step, found[step]
    raise PublishError(f"project {project.name!r} has no run with checkpoints",
                       hint="train with --save-every-steps N or --save-every-epochs N")


def latest_sample(run_dir: Path, up_to_step: int | None = None) -> Path | None:
    """The run's newest sample image: the last `sample` event's file, else the newest PNG in samples/.
    With `up_to_step`, the last sample made at or before that step (a checkpoint's own preview), or None."""
    files = RunFiles(run_dir)
    events: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        events = read_all(files.events)
    newest = None
    for ev in events:
        if ev.get("type") == "sample" and ev.get("path"):
            if up_to_step is not None and not (isinstance(ev.get("step"), int) and ev["step"] <= up_to_step):
                continue
            p = Path(ev["path"])
            p = p if p.is_absolute() else run_dir / p
            if p.is_file() and p.suffix.lower() == ".png":
                newest = p
    if newest is not None or up_to_step is not None:
        return newest
    pngs = [p for p in files.samples.glob("**/*.png") if p.is_file()]
    return max(pngs, key=lambda p: (p.stat().st_mtime, p.name)) if pngs else None


def _tag_frequency(project, config: dict[str, Any]) -> dict[str, dict[str, int]]:
    try:
        counts = dict(tag_frequency(project))
    except (LoradeckError, OSError):
        counts = {}
    folder = f"{config.get('repeats', 1)}_{project.name}"
    return {folder: counts}


def _dataset_size(project) -> int:
    if not project.dataset.is_dir():
        return 0
    return sum(1 for p in project.dataset.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def run_fill_metadata(project, settings, run_dir: Path, config: dict[str, Any],
                      step: int | None = None) -> dict[str, str]:
    """Metadata for keys a run's LoRA may lack (the trainer writes most of them itself)."""
    dataset = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    trigger = dataset.get("trigger_word") or (settings.project.trigger_word if settings else "")
    train = {k: v for k, v in config.items() if not isinstance(v, dict)}
    steps = step if step is not None else int(train.get("max_train_steps") or 0)
    epochs = int(train.get("max_train_epochs") or 0)
    meta = kohya_metadata(config=train, base_model=str(train.get("base_model", "")), base_model_version="sd_v1",
                          resolution=int(train.get("resolution", 512)), tag_frequency=_tag_frequency(project, train),
                          num_train_images=_dataset_size(project), steps=steps, epochs=epochs,
                          output_name=str(train.get("output_name", "lora")),
                          extra={"trigger": trigger, "base_model": str(train.get("base_model", "")),
                                 "project": project.name, "run": run_dir.name})
    return meta


def export_run(project_name: str, run: str | None = None, *, root=None, to=None, name: str | None = None,
               on_conflict: str | None = None, base_model: str | None = None, load_check: bool = True,
               isolate: bool = False, description: str = "", checkpoint: str | int | None = None,
               to_source: str = "--to", wording: dict[str, str] | None = None,
               on_event: Callable[[dict[str, Any]], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> PublishResult:
    """`loradeck export`: validate a run's final LoRA (rules + diffusers load on its base model when
    available) and publish it with sidecar and latest sample as preview. See `publish_adapter`.
    With `checkpoint` (a step or "latest"), one of the run's intermediate checkpoints instead, published
    as OUTPUT-stepN by default, with the last sample made up to that step as its preview. `to_source`
    names where `to` came from in messages (the CLI's --to, the TUI's dialog); `wording` how hints
    name the other choices (see CLI_WORDING). The load check's progress events go to `on_event`, and
    `should_stop` cancels it (loradeck.trainer.children.Cancelled; nothing is published)."""
    project = open_project(project_name, root)
    settings = settings_mod.load(project.settings_file)
    user = load_user_config()
    dest = resolve_destination(to, settings=settings, user=user, flag=to_source, project_dir=project.path)
    policy = resolve_on_conflict(on_conflict, settings=settings, user=user)
    step = None
    if checkpoint is not None:
        run_dir, config, step, output = find_run_checkpoint(project, run, checkpoint)
    else:
        run_dir, config, output = find_run_output(project, run)
    out_name = check_name(name or _default_name(project, config, step))
    if policy == "refuse" and os.path.lexists(adapter_path(dest.path, out_name)):
        raise PublishError(f"{adapter_path(dest.path, out_name)} already exists",
                           hint=f"choose another {_words(wording)['name']}, or {_words(wording)['version']}")
    run_base = str(config.get("base_model") or "")
    base = base_model or _local_base(run_base, project)
    report = validate(output, base_model=base, load_check=load_check and bool(base), isolate=isolate,
                      on_event=on_event, should_stop=should_stop)
    if load_check and not base:
        report.load_check = (f"skipped: base model {run_base} is not available locally" if run_base
                             else "skipped: the run names no base model")
    if not report.ok:
        raise InvalidLoraError(report)
    result = publish_adapter(output, dest, out_name, on_conflict=policy,
                             fill_metadata=run_fill_metadata(project, settings, run_dir, config, step),
                             preview=latest_sample(run_dir, up_to_step=step), who=user.who, project=project.name,
                             run=run_dir.name, description=description or settings.project.description,
                             wording=wording)
    result.step = step
    result.load_check = report.load_check
    result.warnings = [p.message for p in report.problems if p.severity == "warning"]
    return result


def _default_name(project, config: dict[str, Any], step: int | None) -> str:
    return str(config.get("output_name") or project.name) + (f"-step{step}" if step is not None else "")


def export_name(project, run: str | None = None, checkpoint: str | int | None = None) -> str:
    """The name `export_run` publishes under when given no `name`: the run's output name (else the
    project's), with -stepN for a checkpoint. Raises PublishError as export_run would."""
    if checkpoint is not None and str(checkpoint) != "":
        _run_dir, config, step, _file = find_run_checkpoint(project, run, checkpoint)
        return _default_name(project, config, step)
    _run_dir, config, _output = find_run_output(project, run)
    return _default_name(project, config, None)


def _local_base(base: str, project) -> str | None:
    """The base model to load-check against, if it can be found without a download (else None: the
    check is skipped and says so)."""
    if not base:
        return None
    path = Path(base).expanduser()
    if not path.is_absolute() and (project.path / path).exists():
        return str(project.path / path)
    return base if base_available(base) else None
