"""Output folders are checked before any training, and written whole or not at all.

SAELens writes ``output_path`` (and creates ``checkpoint_path``) only after the last step: a read-only folder or
a path that is an existing file used to fail there, after all the training, and with SAELens's default
``n_checkpoints=0`` nothing at all was left. :func:`check_writable` tries a real write (a root user passes
``os.access`` on a read-only mount's permission bits; only the write itself tells) in the folder, or in the
nearest existing folder above it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["check_writable", "write_folder_atomically"]


def check_writable(field: str, path: str | Path | None) -> None:
    """Raise ``ValueError`` naming ``field`` when ``path`` cannot become a folder this process writes into."""
    if path is None:
        return
    path = Path(path).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is an existing file" if probe == path else f"cannot be created: {probe} is a file"
        raise ValueError(f"{field}: {path} {what}; it must be a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        where = "" if probe == path else f" (nearest existing folder {probe})"
        raise ValueError(f"{field}: {path} is not writable{where}: {reason}") from None


def write_folder_atomically(folder: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a hidden sibling folder, then put it in place: renamed as a whole when ``folder`` is
    missing or empty, else file by file (each rename atomic, all data written first; files of ``folder`` that
    ``write`` does not produce stay). A failed write leaves ``folder`` as it was and no temporary behind (a
    SIGKILL's is removed by a later resume)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".incomplete-{folder.name}-", suffix=f"-{os.getpid()}", dir=folder.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
        if folder.is_dir() and any(folder.iterdir()):
            for f in tmp.iterdir():
                os.replace(f, folder / f.name)
        else:
            if folder.is_dir():
                folder.rmdir()
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
