"""Projects on disk: where the root is, what a valid name is, and the layout of a project folder.

This module is the one place that knows the on-disk layout (docs/layout.md describes it):

    <root>/<name>/
      project.toml     settings (loradeck.trainer.config.project_settings)
      originals/       imported files, byte-identical, never modified
      dataset/         prepared images + caption sidecars; training reads only this
      runs/<run-id>/   one training run (loradeck.trainer.runs.lifecycle)
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.errors import ProjectError

ROOT_ENV = "LORADECK_ROOT"
DEFAULT_ROOT = Path("projects")
SETTINGS_FILE = "project.toml"
ORIGINALS_DIR = "originals"
DATASET_DIR = "dataset"
RUNS_DIR = "runs"
# Engine bookkeeping that is not user data (import index, prep manifest, latent cache).
STATE_DIR = ".loradeck"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$")


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """`--root DIR`, else `$LORADECK_ROOT`, else `./projects`: absolute, `~` expanded, symlinks resolved.

    Resolved here, once, because run folders, task and trainer command lines cross into processes
    that start in other working folders (a trainer starts in its run folder): a relative root would
    name a different place there. Symlinks are resolved so that every process names a run by one
    path (the stop/resume checks compare command lines).
    """
    chosen = root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    return absolute_path(chosen)


def absolute_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """`path` with `~` expanded, made absolute against `base` (default: the current folder), with
    symlinks and `..` resolved; the path need not exist."""
    expanded = Path(path).expanduser()
    if not expanded.is_absolute():
        expanded = Path(base if base is not None else os.getcwd()).expanduser() / expanded
    return expanded.resolve()


def validate_name(name: str) -> str:
    """Return `name` if it is one safe path component, else raise ProjectError saying why."""
    if not isinstance(name, str) or not name:
        raise ProjectError("project name is empty")
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ProjectError(f"project name {name!r} is not a single path component")
    if name != name.strip() or name.endswith("."):
        raise ProjectError(f"project name {name!r} may not start or end with spaces or end with a dot")
    if not _NAME_RE.match(name):
        raise ProjectError(
            f"project name {name!r} is not allowed: use 1-64 ASCII letters, digits, '.', '_', '-' or spaces,"
            " starting with a letter or digit")
    return name


@dataclass(frozen=True)
class Project:
    """A project folder. Paths only; reading settings is loradeck.trainer.config.project_settings' job."""

    root: Path
    name: str

    def __post_init__(self) -> None:
        # A Project built by hand on a relative root still names one place from any process.
        if not Path(self.root).is_absolute():
            object.__setattr__(self, "root", absolute_path(self.root))

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def settings_file(self) -> Path:
        return self.path / SETTINGS_FILE

    @property
    def originals(self) -> Path:
        return self.path / ORIGINALS_DIR

    @property
    def dataset(self) -> Path:
        return self.path / DATASET_DIR

    @property
    def runs(self) -> Path:
        return self.path / RUNS_DIR

    @property
    def state(self) -> Path:
        return self.path / STATE_DIR

    def run_dir(self, run_id: str) -> Path:
        validate_name(run_id)
        return self.runs / run_id

    def exists(self) -> bool:
        return self.settings_file.is_file()


def open_project(name: str, root: str | os.PathLike | None = None) -> Project:
    """The existing project `name` under the resolved root; ProjectError if there is none."""
    project = Project(check_root(resolve_root(root)), validate_name(name))
    if not project.exists():
        if _lost_its_settings(project) or is_damaged(project):
            raise ProjectError(f"{project.path} has no {SETTINGS_FILE}",
                               hint=f"restore it, or write a fresh one with: {command('repair', name)}"
                                    f" (keeps originals/, dataset/ and runs/), or remove it with:"
                                    f" {command('delete', name)}")
        raise ProjectError(f"no project {name!r} in {project.root}",
                           hint=f"create it with: {command('init', name)}")
    return project


def check_root(base: Path) -> Path:
    """`base` if it can hold projects (a folder, or nothing yet); a root that is a file is an error,
    not an empty list of projects."""
    if base.exists() and not base.is_dir():
        raise ProjectError(f"projects root {base} is not a folder",
                           hint="pass --root DIR (or set $LORADECK_ROOT) to a folder")
    return base


def is_damaged(project: Project) -> bool:
    """A project folder that is half there: it has originals/, dataset/ or runs/ but no project.toml
    (deleted by hand, or a trainer wrote into a deleted project before loradeck refused that)."""
    if project.settings_file.exists() or not project.path.is_dir():
        return False
    return any((project.path / sub).is_dir() for sub in (ORIGINALS_DIR, DATASET_DIR, RUNS_DIR))


def list_damaged(root: str | os.PathLike | None = None) -> list[Project]:
    """The damaged project folders under the root (see is_damaged), sorted by name; listings show
    them with a repair or remove action."""
    base = check_root(resolve_root(root))
    if not base.is_dir():
        return []
    found = []
    for child in sorted(base.iterdir(), key=lambda p: p.name.lower()):
        if child.name.startswith(".") or not child.is_dir() or not _NAME_RE.match(child.name):
            continue
        if is_damaged(Project(base, child.name)):
            found.append(Project(base, child.name))
    return found


def repair_project(name: str, root: str | os.PathLike | None = None) -> Project:
    """Give a damaged project (see is_damaged) a fresh project.toml with default settings and its
    missing sub-folders; nothing already there changes. ProjectError when there is nothing to repair."""
    project = Project(check_root(resolve_root(root)), validate_name(name))
    if project.exists():
        raise ProjectError(f"project {name!r} is not damaged: {project.settings_file} is there")
    if not is_damaged(project):
        raise ProjectError(f"no damaged project {name!r} in {project.root}",
                           hint=f"create a new one with: {command('init', name)}")
    for sub in (ORIGINALS_DIR, DATASET_DIR, RUNS_DIR):
        (project.path / sub).mkdir(exist_ok=True)
    settings_mod.write_new(project.settings_file, name=name)
    return project


def _lost_its_settings(project: Project) -> bool:
    """A folder in the project layout (only its sub-folders in it) whose project.toml is gone."""
    try:
        entries = {p.name for p in project.path.iterdir()}
    except OSError:
        return False
    return bool(entries) and not project.settings_file.exists() and \
        entries <= {ORIGINALS_DIR, DATASET_DIR, RUNS_DIR, STATE_DIR}


def create_project(name: str, root: str | os.PathLike | None = None, **settings) -> Project:
    """Create a new project folder with its settings file; refuses to touch an existing one, except
    a project folder that lost its project.toml, which gets a fresh one (nothing else changes).

    Keyword arguments are [project] settings (trigger_word, base_model, caption_extension, ...).
    """
    project = Project(check_root(resolve_root(root)), validate_name(name))
    if project.path.exists() and _lost_its_settings(project):
        # Its project.toml was deleted: write a fresh one, keep everything else as it is.
        for sub in (ORIGINALS_DIR, DATASET_DIR, RUNS_DIR):
            (project.path / sub).mkdir(exist_ok=True)
        settings_mod.write_new(project.settings_file, name=name, **settings)
        return project
    if project.path.exists():
        raise ProjectError(f"{project.path} already exists")
    project.root.mkdir(parents=True, exist_ok=True)
    # Build in a hidden sibling, then rename: a half-made project never shows up in listings.
    staging = project.root / f".{name}.creating"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        for sub in (ORIGINALS_DIR, DATASET_DIR, RUNS_DIR):
            (staging / sub).mkdir()
        settings_mod.write_new(staging / SETTINGS_FILE, name=name, **settings)
        staging.rename(project.path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return project


def list_projects(root: str | os.PathLike | None = None) -> list[Project]:
    """Every project (a folder with a project.toml) under the root, sorted by name. A root that is a
    file is a ProjectError; one that does not exist yet has no projects."""
    base = check_root(resolve_root(root))
    if not base.is_dir():
        return []
    found = []
    for child in sorted(base.iterdir(), key=lambda p: p.name.lower()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        if (child / SETTINGS_FILE).is_file():
            found.append(Project(base, child.name))
    return found


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def dataset_images(project: Project) -> list[Path]:
    """The prepared training images in dataset/, sorted by name."""
    if not project.dataset.is_dir():
        return []
    return sorted((p for p in project.dataset.iterdir() if p.is_file() and is_image_file(p)
                   and not p.name.startswith(".")), key=lambda p: p.name)
