"""Atomic file writes: a reader sees the old content or the new, never a partial or empty file.

The data goes to a temporary file in the same directory, is fsynced, then renamed over the target,
and the directory is fsynced so the rename survives a crash. On any failure (full disk, a write
error, an exception while producing the content) the temporary file is removed and the target is
left exactly as it was.

    atomic_open / atomic_write_bytes / atomic_write_text   replace a file
    StagedFile + link_no_clobber                            place a new file under a name only if it is free
    sweep_stale_temporaries                                 clear what a crashed writer left behind
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator

# Temporary files start with this prefix so they never look like user data (an image, a caption,
# an adapter) and can be swept up safely after a crash.
TMP_PREFIX = ".loradeck-tmp-"
# A temporary older than this was left by a crash, not by a writer still at work.
STALE_TEMP_SECONDS = 3600.0


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry change (a rename) to disk; a no-op where the OS does not allow it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                perms: int | None = None) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on a clean exit it replaces `path`.

    `perms` sets the final file mode (for example 0o664 for group-readable exports); by default an
    existing target keeps its mode and a new file gets 0o644 less the umask.
    """
    path = Path(path)
    if "w" not in mode:
        raise ValueError("atomic_open only writes")
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if perms is not None:
            os.chmod(tmp, perms)
        elif path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, perms: int | None = None) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_open(path, "wb", perms=perms) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, perms: int | None = None) -> None:
    """Replace `path` with `text` (utf-8, newlines as given) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), perms=perms)


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (the TUI writes from worker
    threads: briefly setting another umask would race with files other threads create)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


class StagedFile:
    """A hidden temporary file in `folder`, written in full and fsynced before it gets a final name
    (by `link_no_clobber`, or `os.replace` where replacing is meant); `discard` removes it unless placed."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / f"{TMP_PREFIX}{secrets.token_hex(6)}.part"
        self.placed = False

    def write(self, produce: Callable[[Any], None], mode: int) -> None:
        """`produce(fh)` writes the content to the binary file `fh`; the file then gets `mode`."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            produce(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(self.path, mode)

    def discard(self) -> None:
        if not self.placed:
            with contextlib.suppress(OSError):
                self.path.unlink()


# Errors by which a filesystem says it has no hard links (some SMB/FAT mounts), not that the name is taken.
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS)


def link_no_clobber(tmp: Path, final: Path) -> bool:
    """Give `tmp` the name `final` unless `final` exists; True when placed. Atomic where the filesystem
    has hard links (two writers racing for one name: exactly one wins); elsewhere an existence check
    then a rename."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(final):
            return False
        os.replace(tmp, final)
        return True
    os.unlink(tmp)
    return True


def sweep_stale_temporaries(folder: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove loradeck temporaries a crashed writer left in `folder` (only old ones: another process,
    a teammate's publish on a shared folder, may be writing a fresh one right now). Returns how many."""
    removed = 0
    cutoff = time.time() - older_than
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
    return removed
