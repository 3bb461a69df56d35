"""Writing a file so that readers, and a process killed half-way, only ever see the old or the new file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["TMP_SUFFIX", "write_atomically"]

TMP_SUFFIX = ".tmp"
"""How the names of temporary files end (a folder being uploaded leaves them out)."""


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temporary sibling of ``path``, flush it to disk, then rename it to ``path``.

    The temporary file is hidden and uniquely named (concurrent writers of one path do not collide), and
    removed if ``write`` fails. ``write`` gets the temporary file's path, e.g.
    ``write_atomically(path, lambda tmp: tmp.write_text(text))``.
    """
    path = Path(path)
    # Not tempfile.mkstemp: its files are private (0600), and ``path`` keeps the usual permissions.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        write(tmp)
        with tmp.open("rb+") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
