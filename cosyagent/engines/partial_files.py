"""Temporary files beside a cache file being made: it appears under its name only whole
(``os.replace`` from one of them), and they are removed however the making ends."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def partial_files(target: Path, *suffixes: str) -> Iterator[list[Path]]:
    """One new empty file per suffix in ``target``'s folder (made if missing), named after it
    and hidden; whichever of them still exists on the way out is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    try:
        for suffix in suffixes:
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
            os.close(handle)
            paths.append(Path(name))
        yield paths
    finally:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
