"""Atomic job outputs: write into a staging directory, move into place on success.

The staging directory is a sibling of the final one (same filesystem, so the
final move is a rename). A job that fails leaves nothing behind; a rerun that
succeeds replaces the previous outputs as a whole, never merging with them.
Outputs must live on a filesystem all executors share (a local disk in local
mode or on a single-machine standalone cluster, NFS or similar on a cluster).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

__all__ = ["AtomicOutput", "local_path"]


def local_path(path: str | os.PathLike) -> Path:
    """A local filesystem path from ``path`` or a ``file:`` URI; other schemes are refused."""
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise ValueError(f"output {text!r}: only local or shared-filesystem paths are supported for outputs")
    return Path(text).expanduser().absolute()


class AtomicOutput:
    """A staging directory that becomes ``final`` on :meth:`commit`.

    Use as a context manager: leaving the block with an exception removes the
    staging directory; leaving it normally without :meth:`commit` does too.
    """

    def __init__(self, final: str | os.PathLike):
        self.final = local_path(final)
        self.staging = self.final.parent / f".{self.final.name}.staging-{uuid.uuid4().hex[:8]}"
        self.committed = False

    def __enter__(self) -> AtomicOutput:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir()
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.committed:
            self.abort()

    def commit(self) -> Path:
        """Replace ``final`` with the staging directory."""
        retired = None
        if self.final.exists():
            retired = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.final, retired)
        os.rename(self.staging, self.final)
        self.committed = True
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        """Remove the staging directory and everything in it."""
        shutil.rmtree(self.staging, ignore_errors=True)
