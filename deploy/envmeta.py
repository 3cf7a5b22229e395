"""What a scilens environment is, and whether a packed environment archive fits the one submitting a job.

Standard library only: it runs under whichever interpreter it describes (a stack's venv, the staging copy
``deploy/pack.sh`` packs, the driver's Python in ``deploy/submit.sh``), before anything heavy is imported.

    python deploy/envmeta.py stack                    # the stack this interpreter's environment is
    python deploy/envmeta.py describe --stack NAME    # environment-meta.json for this environment
    python deploy/envmeta.py check ARCHIVE            # exit 2, naming both, if ARCHIVE was built for another
                                                      # stack or Python than this environment

A stack is a constraints file, ``constraints/<name>.txt`` (``constraints.txt`` counts as ``current`` in a
checkout that has only the one file). An environment's stack is, first found: ``SCILENS_STACK``; the first
word of ``<venv>/.scilens-stack`` (written by ``deploy/install.sh``); the stack whose pins of the key packages
(:data:`KEY_PACKAGES`) it has installed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import sysconfig
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
META_NAME = "environment-meta.json"
STACKS = ("current", "horovod")
KEY_PACKAGES = ("pyspark", "numpy", "pyarrow", "tensorflow")
# TensorFlow is installed as either distribution; both import as `tensorflow`.
DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu")}


class EnvError(Exception):
    """An environment or archive that cannot be used, said in one line."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str | None]:
    """Versions of the key packages in the running environment (None: not installed)."""
    versions: dict[str, str | None] = {}
    for key in KEY_PACKAGES:
        versions[key] = None
        for dist in DISTRIBUTIONS.get(key, (key,)):
            try:
                versions[key] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def stack_files(root: Path = ROOT) -> dict[str, Path]:
    """stack name -> its constraints file."""
    files = {p.stem: p for p in sorted((root / "constraints").glob("*.txt"))}
    if not files and (root / "constraints.txt").is_file():
        files["current"] = root / "constraints.txt"
    return files


def pinned_versions(constraints: Path) -> dict[str, str]:
    """The key packages a constraints file pins exactly (``name==version``)."""
    pins: dict[str, str] = {}
    aliases = {_norm(dist): key for key in KEY_PACKAGES for dist in DISTRIBUTIONS.get(key, (key,))}
    for line in constraints.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match and _norm(match.group(1)) in aliases:
            pins[aliases[_norm(match.group(1))]] = match.group(2)
    return pins


def _versions_text(versions: dict[str, str | None]) -> str:
    return ", ".join(f"{k} {v or 'absent'}" for k, v in versions.items())


def detect_stack(versions: dict[str, str | None] | None = None, root: Path = ROOT) -> str | None:
    """The stack the running environment is, or None if it matches none."""
    if os.environ.get("SCILENS_STACK"):
        return os.environ["SCILENS_STACK"]
    marker = Path(sys.prefix, ".scilens-stack")
    if marker.is_file() and marker.read_text().split():
        return marker.read_text().split()[0]
    versions = installed_versions() if versions is None else versions
    matches = [name for name, path in stack_files(root).items()
               if all(versions.get(key) == pin for key, pin in pinned_versions(path).items())]
    return matches[0] if len(matches) == 1 else None


def _source_digest(root: Path = ROOT) -> str:
    """SHA-256 over scilens's source files: tells an archive built from other code than the driver's."""
    digest = hashlib.sha256()
    for path in sorted((root / "lib" / "scilens").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def describe(stack: str) -> dict:
    """The metadata of the running environment, as packed into its archive."""
    versions = installed_versions()
    try:
        scilens_version = importlib.metadata.version("scilens")
    except importlib.metadata.PackageNotFoundError:
        scilens_version = None
    return {
        "stack": stack,
        "python": platform.python_version(),
        "python_abi": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "platform": sysconfig.get_platform(),
        "interpreter": os.path.realpath(sys.executable),
        "scilens": scilens_version,
        "scilens_source_sha256": _source_digest(),
        "packages": versions,
    }


def read_archive_meta(archive: Path) -> dict:
    """The metadata file of ``archive``, read without unpacking the rest (``deploy/pack.sh`` puts it first)."""
    if not archive.is_file():
        raise EnvError(f"environment archive {archive} does not exist")
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.name.lstrip("./") == META_NAME:
                    return json.loads(tar.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise EnvError(f"environment archive {archive} is not a readable tar archive: {exc}") from None
    except json.JSONDecodeError as exc:
        raise EnvError(f"environment archive {archive}: {META_NAME} is not JSON: {exc}") from None
    raise EnvError(f"environment archive {archive} holds no {META_NAME}: build it with deploy/pack.sh")


def check_archive(archive: Path, root: Path = ROOT) -> str:
    """One line on what ``archive`` is if it fits the running environment; EnvError naming both if not."""
    meta = read_archive_meta(archive)
    for field in ("stack", "python_abi", "packages"):
        if field not in meta:
            raise EnvError(f"environment archive {archive}: {META_NAME} has no {field!r}; rebuild it with "
                           "deploy/pack.sh")
    here_versions = installed_versions()
    here_stack = detect_stack(here_versions, root)
    here_abi = f"{sys.version_info[0]}.{sys.version_info[1]}"
    ours = f"stack {meta['stack']}, Python {meta.get('python', meta['python_abi'])}"
    theirs = (f"stack {here_stack or 'unknown (' + _versions_text(here_versions) + ')'}, "
              f"Python {platform.python_version()}")
    problem = None
    if meta["python_abi"] != here_abi:
        problem = "another Python version"
    elif here_stack is not None and meta["stack"] != here_stack:
        problem = "another stack"
    elif meta["packages"].get("pyspark") != here_versions.get("pyspark"):
        problem = (f"another pyspark ({meta['packages'].get('pyspark')} in the archive, "
                   f"{here_versions.get('pyspark')} here)")
    if problem:
        raise EnvError(f"environment archive {archive} was built for {ours}; the submitting environment "
                       f"({sys.executable}) is {theirs}: {problem}. Submit from that stack's venv, or build "
                       f"the archive for this one with deploy/pack.sh {here_stack or '<stack>'}")
    line = f"environment archive {archive.name}: {ours}, {_versions_text(meta['packages'])}"
    if meta.get("scilens_source_sha256") and meta["scilens_source_sha256"] != _source_digest(root):
        line += ("\nwarning: scilens in the archive was built from other source than lib/scilens here; "
                 "executors will run the archive's code (rebuild it with deploy/pack.sh)")
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="envmeta.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stack", help="print the stack of this environment")
    desc = sub.add_parser("describe", help=f"print the {META_NAME} of this environment")
    desc.add_argument("--stack", required=True, choices=STACKS)
    check = sub.add_parser("check", help="refuse an archive built for another stack or Python")
    check.add_argument("archive", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "stack":
            stack = detect_stack()
            if stack is None:
                known = ", ".join(f"{name} ({path.relative_to(ROOT)})" for name, path in stack_files().items())
                raise EnvError(f"{sys.executable} is none of the stacks [{known or 'no constraints files'}]: it "
                               f"has {_versions_text(installed_versions())}")
            print(stack)
        elif args.command == "describe":
            print(json.dumps(describe(args.stack), indent=2))
        else:
            print(check_archive(args.archive))
    except EnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
