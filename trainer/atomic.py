"""Atomic file writes: a reader sees the old content or the new, never a partial or empty file.

The data goes to a temporary file in the same directory, is fsynced, then renamed over the target,
and the directory is fsynced so the rename survives a crash. On any failure (full disk, a write
error, an exception while producing the content) the temporary file is removed and the target is
left exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

# Temporary files start with this prefix so they never look like user data (an image, a caption,
# an adapter) and can be swept up safely after a crash.
TMP_PREFIX = ".loradeck-tmp-"


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
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o644 & ~umask)
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


def sweep_temporaries(directory: Path) -> int:
    """Remove temporary files a crashed writer left in `directory`; returns how many."""
    removed = 0
    for p in directory.glob(TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed += 1
    return removed
