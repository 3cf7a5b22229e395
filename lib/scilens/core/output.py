"""Atomic job outputs: write into a staging directory, move into place on success.

The staging directory is a sibling of the final one (same filesystem, so the
final move is a rename). A job that fails leaves nothing behind; a rerun that
succeeds replaces the previous outputs as a whole, never merging with them.
Outputs must live on a filesystem all executors share (a local disk in local
mode or on a single-machine standalone cluster, NFS or similar on a cluster).

What an output may replace is guarded, because replacing is deleting:

* every output holds a marker file (:data:`MARKER`); a directory without one
  that is not empty was not written by scilens and is refused unless the user
  says ``overwrite``;
* a directory that holds an input (the output is the input, or an ancestor
  of it) is refused always: replacing it would delete the input;
* one run at a time writes an output: a lock file beside it (``flock``, so the
  lock dies with its process, even on SIGKILL) makes a second run fail clearly;
* holding the lock, a run removes the staging and retired directories earlier
  runs of the same output left behind when they were killed (only those: they
  carry the staging marker), and puts back a previous output that a kill
  between the two renames of a commit left retired.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

__all__ = ["MARKER", "AtomicOutput", "OutputError", "local_path"]

MARKER = ".scilens-output"
"""File in every scilens output (and staging directory): the job and run that wrote it."""

_GLOB_CHARS = set("*?[")


class OutputError(ValueError):
    """The output directory cannot be used (it holds an input, holds other files, or is in use)."""


def local_path(path: str | os.PathLike) -> Path:
    """A local filesystem path from ``path`` or a ``file:`` URI; other schemes are refused."""
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise OutputError(f"output {text!r}: only local or shared-filesystem paths are supported for outputs")
    return Path(os.path.normpath(Path(text).expanduser().absolute()))


def _input_root(item: str) -> Path:
    """The real path an input names: the file or directory itself, or a glob's fixed leading directories."""
    text = item[len("file://"):] if item.startswith("file://") else item
    parts = Path(text).expanduser().absolute().parts
    fixed = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(os.path.realpath(Path(*fixed)))


def _written_by_scilens(directory: Path) -> bool:
    """The marker, or (outputs written before the marker existed) a manifest naming a scilens job."""
    if (directory / MARKER).is_file():
        return True
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "job" in manifest and "scilens" in manifest.get("versions", {})


def _is_within(path: Path, ancestor: Path) -> bool:
    return path == ancestor or ancestor in path.parents


class AtomicOutput:
    """A staging directory that becomes ``final`` on :meth:`commit`.

    Use as a context manager: entering takes the output's lock and checks that
    ``final`` may be replaced (:class:`OutputError` if not); leaving the block
    with an exception, or without :meth:`commit`, removes the staging
    directory and leaves any previous output as it was.

    Parameters
    ----------
    final : path
        The output directory.
    inputs : sequence of str
        The run's inputs (files, directories or globs): an output holding one is refused.
    overwrite : bool
        Replace an existing directory that was not written by scilens.
    job : str
        Recorded in the marker file.
    """

    def __init__(self, final: str | os.PathLike, inputs: Sequence[str] = (), overwrite: bool = False,
                 job: str = ""):
        self.final = local_path(final)
        self.inputs = list(inputs)
        self.overwrite = overwrite
        self.job = job
        self.run_id = uuid.uuid4().hex[:8]
        self.staging = self.final.parent / f".{self.final.name}.staging-{self.run_id}"
        self.lock_path = self.final.parent / f".{self.final.name}.lock"
        self.committed = False
        self._lock_fd: int | None = None

    # --- checks -------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`OutputError` if ``final`` must not be replaced by this run."""
        real = Path(os.path.realpath(self.final))
        if real == Path(real.anchor) or real == Path.home().resolve():
            raise OutputError(f"output {self.final}: refusing to replace the filesystem root or the home directory")
        for item in self.inputs:
            root = _input_root(item)
            if _is_within(root, real):
                raise OutputError(f"output {self.final} holds the input {item}; replacing it would delete the "
                                  "input. Choose an output directory outside the inputs.")
        if real.exists() and not real.is_dir():
            raise OutputError(f"output {self.final} exists and is not a directory")
        if real.is_dir() and not _written_by_scilens(real) and any(real.iterdir()) and not self.overwrite:
            raise OutputError(f"output {self.final} is not empty and was not written by scilens (no {MARKER} "
                              "file); its contents would be deleted. Choose another directory, or pass "
                              "--overwrite to replace it.")

    # --- lock ---------------------------------------------------------------------
    def _lock(self) -> None:
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = ""
                with contextlib.suppress(OSError):
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise OutputError(f"output {self.final} is being written by another scilens run"
                                      f"{f' ({holder})' if holder else ''}; wait for it to finish or choose "
                                      "another output directory") from None
                raise
            # The file may have been removed by the previous holder between our open and our lock:
            # then we hold a lock nobody else can see. Lock the file that is there instead.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}, job {self.job or '?'}, run {self.run_id}".encode(), 0)
                self._lock_fd = fd
                return
            os.close(fd)

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)
        os.close(self._lock_fd)
        self._lock_fd = None

    # --- leftovers of killed runs -------------------------------------------------------
    def _recover(self) -> None:
        """Remove what killed runs of this output left; put back a retired output if the final one is gone."""
        parent, name = self.final.parent, self.final.name
        retired = [Path(p) for p in glob.glob(str(parent / f".{glob.escape(name)}.old-*"))
                   if (Path(p) / MARKER).is_file()]
        if not self.final.exists() and retired:
            newest = max(retired, key=lambda p: p.stat().st_mtime)
            os.rename(newest, self.final)
            retired.remove(newest)
        stale = [Path(p) for p in glob.glob(str(parent / f".{glob.escape(name)}.staging-*"))
                 if (Path(p) / MARKER).is_file()]
        for path in [*stale, *retired]:
            shutil.rmtree(path, ignore_errors=True)

    # --- life cycle ----------------------------------------------------------------
    def __enter__(self) -> AtomicOutput:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._recover()
            self.check()
            self.staging.mkdir()
            (self.staging / MARKER).write_text(json.dumps({"job": self.job, "run": self.run_id}) + "\n")
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if not self.committed:
                self.abort()
        finally:
            self._unlock()

    def commit(self) -> Path:
        """Replace ``final`` with the staging directory."""
        retired = None
        if self.final.exists():
            retired = self.final.parent / f".{self.final.name}.old-{self.run_id}"
            os.rename(self.final, retired)
            if not (retired / MARKER).is_file():  # an --overwrite of a foreign directory: mark it ours to remove
                (retired / MARKER).write_text("{}\n")
        os.rename(self.staging, self.final)
        self.committed = True
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        """Remove the staging directory and everything in it."""
        shutil.rmtree(self.staging, ignore_errors=True)
