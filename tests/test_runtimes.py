"""scilens's declared dependencies against the Databricks runtimes' package sets (deploy/runtimes/).

* On 17.3 LTS ML (the current stack's platform), ``pip install scilens[neuro,astro,ml]`` must change nothing
  the runtime ships: every range admits the runtime's version.
* On 15.4 LTS ML (the horovod stack's platform), the README lists which of the runtime's packages the horovod
  stack replaces; that list is computed here from the same files, and the README must equal it.
  ``python -m tests.test_runtimes`` prints the README's table.

deploy/runtimes/ holds copies of ``../shared/runtimes/`` so a clean clone (CI) has them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ROOT / "deploy" / "runtimes"
FORK = "a Databricks fork"
"""What the runtime files say of a package they ship without a PyPI version (Horovod on 15.4)."""


def runtime_packages(name: str) -> dict[str, str]:
    """Package -> version a runtime ships (``FORK`` for a fork), from ``deploy/runtimes/<name>.txt``.

    pyspark is not in the lists (the runtime brings its own Spark); its version is read from the header.
    """
    text = (RUNTIMES / f"{name}.txt").read_text()
    packages: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            fork = re.match(r"#\s*([A-Za-z0-9_.-]+): a Databricks fork", line)
            spark = re.search(r"Apache Spark (\d+\.\d+\.\d+)", line)
            if fork:
                packages[canonicalize_name(fork.group(1))] = FORK
            if spark:
                packages["pyspark"] = spark.group(1)
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(~=|==)\s*([^\s#]+)", line)
        assert match, f"{name}.txt line {number}: not 'name~=version': {raw!r}"
        packages[canonicalize_name(match.group(1))] = match.group(3).split("+")[0]
    return packages


def declared(extras: list[str]) -> dict[str, SpecifierSet]:
    """Package -> the range scilens's pyproject declares for it, over the core and ``extras`` together."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    ranges: dict[str, SpecifierSet] = {}
    for line in lines:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        ranges[name] = ranges.get(name, SpecifierSet()) & requirement.specifier
    return ranges


def horovod_stack_requirements() -> dict[str, SpecifierSet]:
    """What the horovod stack needs: pyproject (core, neuro, astro, ml, horovod) and install.sh's Horovod."""
    ranges = declared(["neuro", "astro", "ml", "horovod"])
    script = (ROOT / "deploy" / "install.sh").read_text()
    horovod = re.search(r"^HOROVOD_VERSION=(\S+)$", script, re.MULTILINE)
    assert horovod, "deploy/install.sh sets no HOROVOD_VERSION"
    ranges["horovod"] = SpecifierSet(f"=={horovod.group(1)}")
    return ranges


def admits(spec: SpecifierSet, version: str) -> bool:
    return version != FORK and spec.contains(Version(version), prereleases=True)


def replaced_on(runtime: str, needs: dict[str, SpecifierSet]) -> dict[str, tuple[str, SpecifierSet]]:
    """Runtime packages that ``needs`` does not admit: name -> (runtime's version, needed range)."""
    shipped = runtime_packages(runtime)
    return {name: (shipped[name], spec) for name, spec in sorted(needs.items())
            if name in shipped and not admits(spec, shipped[name])}


def horovod_table() -> str:
    """The README's table of what the horovod stack replaces on Databricks 15.4 LTS ML."""
    rows = ["| package | 15.4 LTS ML ships | the horovod stack needs |", "|---|---|---|"]
    for name, (version, spec) in replaced_on("dbr-15.4-lts-ml", horovod_stack_requirements()).items():
        rows.append(f"| {name} | {version} | {spec} |")
    return "\n".join(rows)


def test_runtime_files_parse_and_name_their_spark():
    for name, spark in [("dbr-15.4-lts-ml", "3.5.0"), ("dbr-16.4-lts-ml", "3.5.2"), ("dbr-17.3-lts-ml", "4.0.0")]:
        shipped = runtime_packages(name)
        assert shipped["pyspark"] == spark
        assert len(shipped) > 200  # the whole list was read, not a header
    assert runtime_packages("dbr-15.4-lts-ml")["horovod"] == FORK
    assert "horovod" not in runtime_packages("dbr-17.3-lts-ml")


def test_installing_on_databricks_17_3_changes_nothing_it_ships():
    shipped = runtime_packages("dbr-17.3-lts-ml")
    needs = declared(["neuro", "astro", "ml"])
    used = sorted(set(needs) & set(shipped))
    # What scilens uses of the runtime: at least the stack-defining packages, or the check proves little.
    assert {"pyspark", "numpy", "pandas", "pyarrow", "scipy", "tensorflow", "xgboost", "scikit-learn",
            "mlflow-skinny", "matplotlib"} <= set(used)
    refused = {name: (shipped[name], str(needs[name])) for name in used if not admits(needs[name], shipped[name])}
    assert refused == {}, f"pyproject's ranges would replace these packages of Databricks 17.3 LTS ML: {refused}"


def test_the_horovod_stack_replaces_at_least_horovod_petastorm_and_tensorflow_on_15_4():
    replaced = replaced_on("dbr-15.4-lts-ml", horovod_stack_requirements())
    assert {"horovod", "petastorm", "tensorflow"} <= set(replaced)
    # and nothing the stack does not name: every entry is a package scilens or install.sh asks for
    assert set(replaced) <= set(horovod_stack_requirements())


def test_readme_lists_exactly_what_the_horovod_stack_replaces_on_15_4():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- horovod-replaces:start -->\n(.*?)\n<!-- horovod-replaces:end -->", readme, re.DOTALL)
    assert block, "README.md has no <!-- horovod-replaces:start/end --> block"
    assert block.group(1).strip() == horovod_table(), (
        "README's list of what the horovod stack replaces on Databricks 15.4 LTS ML is out of date; "
        "regenerate it with: python -m tests.test_runtimes")


def test_each_stack_constraints_file_satisfies_the_declared_ranges():
    """The tested sets are installs of scilens's own metadata (horovod: TF/xgboost as their -cpu builds)."""
    aliases = {"tensorflow-cpu": "tensorflow", "xgboost-cpu": "xgboost"}
    for stack, extras in [("current", ["neuro", "astro", "ml", "dev"]),
                          ("horovod", ["neuro", "astro", "ml", "horovod", "dev"])]:
        pins = {}
        for line in (ROOT / "constraints" / f"{stack}.txt").read_text().splitlines():
            if line and not line.startswith("#"):
                name, version = line.split("==")
                pins[aliases.get(canonicalize_name(name), canonicalize_name(name))] = version
        needs = declared(extras)
        missing = sorted(set(needs) - set(pins))
        assert missing == [], f"constraints/{stack}.txt lacks {missing}"
        refused = {name: (pins[name], str(spec)) for name, spec in needs.items() if not admits(spec, pins[name])}
        assert refused == {}, f"constraints/{stack}.txt is outside pyproject's ranges: {refused}"
        assert ("horovod" in pins or "petastorm" in pins) == (stack == "horovod")


if __name__ == "__main__":
    print(horovod_table())
