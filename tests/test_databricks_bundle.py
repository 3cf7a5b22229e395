"""The Databricks Asset Bundle in ``deploy/databricks/`` holds together without a workspace.

``databricks bundle validate`` needs a workspace to log in to, so this test does the part of it that does
not: it reads ``databricks.yml`` and its includes, resolves ``${var.*}``, ``${bundle.*}`` and
``${workspace.*}`` for each target as the CLI would (a variable nobody sets fails, naming it), and then
checks every job against the Jobs API's own data classes (``databricks-sdk``), the repository (entry
points, configs, the job's CLI), the runtimes scilens lists, and the rules of issue 13: dedicated
clusters, the wheel built by the bundle, nothing from the DBFS root.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.sdk.service.jobs import JobSettings
from packaging.requirements import Requirement

from scilens import cli
from scilens.core.config import load_config
from tests.runtimes import CURRENT, RUNTIMES, normalize, runtime_file, runtime_packages
from tests.test_deploy import job_entry_points

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "deploy" / "databricks" / "databricks.yml"

USER = "someone@example.com"
"""Stands in for ``workspace.current_user.userName``, which the CLI asks the workspace for."""

TOP_LEVEL_KEYS = {"bundle", "include", "sync", "artifacts", "variables", "workspace", "targets", "resources"}
TARGET_KEYS = {"mode", "default", "variables", "workspace"}
"""What the resolver below understands; anything else in the bundle fails the test instead of being ignored."""

BUNDLE_ONLY_JOB_KEYS = {
    "permissions": "bundle ACLs, applied through the Permissions API after the job is created",
    "lifecycle": "bundle deployment option (prevent_destroy), never sent to the Jobs API",
}
"""Keys a bundle's job resource may hold that are not Jobs API fields, so JobSettings rightly drops them."""

DEDICATED = {"SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED"}
"""Single-user access mode: the jobs use RDD APIs that standard (shared) access mode refuses."""

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


class BundleError(ValueError):
    """The bundle cannot be resolved; the message names the file, target and key."""


def load_bundle(path: Path = BUNDLE) -> tuple[dict[str, Any], dict[str, Path]]:
    """``databricks.yml`` with the resources of its includes merged in, and job key -> file defining it."""
    config = yaml.safe_load(path.read_text())
    unknown = set(config) - TOP_LEVEL_KEYS
    if unknown:
        raise BundleError(f"{path}: keys this test does not resolve: {sorted(unknown)}")
    config.setdefault("resources", {})
    sources: dict[str, Path] = {}
    for pattern in config.get("include", []):
        files = sorted(path.parent.glob(pattern))
        if not files:
            raise BundleError(f"{path}: include {pattern!r} matches no file")
        for file in files:
            doc = yaml.safe_load(file.read_text()) or {}
            if set(doc) - {"resources"}:
                raise BundleError(f"{file}: only resources expected, found {sorted(set(doc) - {'resources'})}")
            for kind, items in doc.get("resources", {}).items():
                merged = config["resources"].setdefault(kind, {})
                for key, value in items.items():
                    if key in merged:
                        raise BundleError(f"{file}: {kind}.{key} is already defined in {sources.get(key)}")
                    merged[key] = value
                    sources[key] = file
    return config, sources


def _choose_target(config: dict[str, Any], target: str | None, path: Path) -> tuple[str, dict[str, Any]]:
    """The target's name (the default one when None) and its settings, refusing keys this test cannot resolve."""
    targets = config.get("targets") or {}
    if target is None:
        defaults = [name for name, t in targets.items() if (t or {}).get("default")]
        if len(defaults) != 1:
            raise BundleError(f"{path}: expected one default target, found {defaults}")
        target = defaults[0]
    if target not in targets:
        raise BundleError(f"{path}: no target {target!r}; targets: {sorted(targets)}")
    chosen = targets[target] or {}
    if set(chosen) - TARGET_KEYS:
        unknown = sorted(set(chosen) - TARGET_KEYS)
        raise BundleError(f"{path}: target {target}: keys this test does not resolve: {unknown}")
    return target, chosen


def _variable_values(config: dict[str, Any], target: str, chosen: dict[str, Any], variables: dict[str, Any] | None,
                     path: Path) -> dict[str, Any]:
    """Each declared variable's value: from --var, else the target, else its default; none fails, naming it."""
    declared = config.get("variables") or {}
    given = dict(variables or {})
    for source, names in (("--var", given), (f"target {target}", chosen.get("variables") or {})):
        undeclared = set(names) - set(declared)
        if undeclared:
            raise BundleError(f"{path}: {source} sets undeclared variable(s) {sorted(undeclared)}")
    values, missing = {}, []
    for name, spec in declared.items():
        if name in given:
            values[name] = given[name]
        elif name in (chosen.get("variables") or {}):
            values[name] = chosen["variables"][name]
        elif "default" in (spec or {}):
            values[name] = spec["default"]
        else:
            missing.append(name)
    if missing:
        raise BundleError(f"{path}: target {target}: no value for variable(s) {', '.join(missing)} "
                          "(no default, not set by the target, not given with --var)")
    return values


def resolve(config: dict[str, Any], target: str | None = None, variables: dict[str, Any] | None = None,
            path: Path = BUNDLE) -> dict[str, Any]:
    """The bundle for one target with every reference substituted, as ``databricks bundle validate`` shows it.

    ``variables`` are the ``--var name=value`` of the command line. A variable with no value (no
    default, not set by the target, not given) fails, naming it.
    """
    target, chosen = _choose_target(config, target, path)
    values = _variable_values(config, target, chosen, variables, path)

    bundle = {**config["bundle"], "target": target, **({"mode": chosen["mode"]} if "mode" in chosen else {})}
    workspace = {**(config.get("workspace") or {}), **(chosen.get("workspace") or {})}
    workspace["current_user"] = {"userName": USER, "short_name": USER.split("@")[0]}
    # The CLI's defaults, in its order: root_path, then the paths under it.
    workspace.setdefault("root_path", f"/Workspace/Users/{USER}/.bundle/{bundle['name']}/{target}")
    workspace.setdefault("file_path", "${workspace.root_path}/files")
    workspace.setdefault("artifact_path", "${workspace.root_path}/artifacts")
    context = {"var": values, "bundle": bundle, "workspace": workspace}

    def lookup(ref: str, where: str) -> Any:
        node: Any = context
        for part in ref.split("."):
            if not isinstance(node, dict) or part not in node:
                raise BundleError(f"{path}: target {target}: unknown reference ${{{ref}}} in {where}")
            node = node[part]
        return node

    def substitute(value: Any, where: str, depth: int = 0) -> Any:
        if depth > 10:
            raise BundleError(f"{path}: target {target}: references in {where} do not resolve (a cycle?)")
        if isinstance(value, dict):
            return {k: substitute(v, f"{where}.{k}" if where else k, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v, f"{where}[{i}]", depth) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = REFERENCE.fullmatch(value)
        if whole:  # "${var.n}" alone keeps the variable's type (an int stays an int)
            return substitute(lookup(whole.group(1), where), where, depth + 1)
        text = REFERENCE.sub(lambda m: str(substitute(lookup(m.group(1), where), where, depth + 1)), value)
        if "${" in text:
            raise BundleError(f"{path}: target {target}: malformed reference in {where}: {value!r}")
        return text

    out = {k: v for k, v in copy.deepcopy(config).items() if k not in ("targets", "variables")}
    out["bundle"], out["workspace"] = bundle, workspace
    context["workspace"] = substitute(workspace, "workspace")
    context["var"] = substitute(values, "variables")
    return substitute(out, "")


def jobs(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resolved["resources"]["jobs"]


VARS = {"failure_email": "scilens-alerts@example.com"}
"""The one variable without a default, as ``--var failure_email=...`` gives it."""


@pytest.fixture(scope="module", params=["dev", "prod"])
def target(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], dict[str, Path]]:
    config, sources = load_bundle()
    return request.param, resolve(config, request.param, VARS), sources


def _tasks(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("tasks") or []


def _clusters(job: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [(c["job_cluster_key"], c["new_cluster"]) for c in job.get("job_clusters") or []]
    found += [(t["task_key"], t["new_cluster"]) for t in _tasks(job) if "new_cluster" in t]
    return found


def _param(params: list[str], flag: str) -> str:
    assert flag in params, f"no {flag} in {params}"
    return params[params.index(flag) + 1]


def _sync_paths(config: dict[str, Any]) -> list[Path]:
    return [(BUNDLE.parent / p).resolve() for p in config.get("sync", {}).get("paths", ["."])]


def test_targets_and_variables():
    config, _ = load_bundle()
    assert config["bundle"]["name"] == "scilens"
    assert config["include"] == ["resources/*.yml"]
    assert set(config["targets"]) == {"dev", "prod"}
    assert config["targets"]["dev"]["mode"] == "development" and config["targets"]["prod"]["mode"] == "production"
    # Production mode refuses a target without its own root_path (one copy per workspace).
    assert config["targets"]["prod"]["workspace"]["root_path"].startswith("/Workspace/")
    # Nobody's address is committed: failing runs email whoever deploys says.
    assert "default" not in config["variables"]["failure_email"]
    assert config["variables"]["spark_version"]["default"] == CURRENT
    # A target's values win over the defaults, and --var over both.
    dev, prod = (resolve(config, t, VARS) for t in ("dev", "prod"))
    assert "/Volumes/main/scilens_dev/scilens/" in dev["workspace"]["artifact_path"]
    assert "/Volumes/main/scilens/scilens/" in prod["workspace"]["artifact_path"]
    def workers(resolved: dict[str, Any]) -> int:
        return jobs(resolved)["ingest"]["job_clusters"][0]["new_cluster"]["num_workers"]

    assert (workers(dev), workers(prod)) == (2, 4)
    again = resolve(config, "prod", {**VARS, "num_workers": 8, "schedule_pause_status": "UNPAUSED"})
    assert workers(again) == 8
    assert jobs(again)["glaucoma_chain"]["schedule"]["pause_status"] == "UNPAUSED"


def test_unset_variable_fails_naming_it(tmp_path: Path):
    config, _ = load_bundle()
    with pytest.raises(BundleError, match="failure_email"):
        resolve(config, "dev")
    # The same for any bundle: a variable without a default that no target sets.
    bundle = tmp_path / "databricks.yml"
    bundle.write_text(yaml.safe_dump({
        "bundle": {"name": "b"},
        "variables": {"catalog": {"default": "main"}, "warehouse": {"description": "no default"}},
        "targets": {"dev": {"default": True, "variables": {"catalog": "dev"}}},
        "resources": {"jobs": {"j": {"name": "${var.warehouse}-${var.catalog}"}}},
    }))
    other, _ = load_bundle(bundle)
    with pytest.raises(BundleError, match=r"no value for variable\(s\) warehouse \(no default"):
        resolve(other, path=bundle)
    assert jobs(resolve(other, variables={"warehouse": "w"}, path=bundle))["j"]["name"] == "w-dev"
    with pytest.raises(BundleError, match=r"undeclared variable\(s\) \['typo'\]"):
        resolve(other, variables={"warehouse": "w", "typo": 1}, path=bundle)
    other["resources"]["jobs"]["j"]["name"] = "${var.wharehouse}"
    with pytest.raises(BundleError, match=r"unknown reference \$\{var.wharehouse\} in resources.jobs.j.name"):
        resolve(other, variables={"warehouse": "w"}, path=bundle)


def test_the_wheel_is_built_and_uploaded_to_a_volume(target):
    name, resolved, _ = target
    (artifact,) = resolved["artifacts"].values()
    assert artifact["type"] == "whl"
    assert re.search(r"\b(pip wheel|-m build)\b", artifact["build"]), artifact["build"]
    # The CLI empties <path>/dist before building a whl artifact: never the repository's own dist/,
    # which holds deploy/pack.sh's environment archives.
    assert (BUNDLE.parent / artifact["path"]).resolve() != ROOT
    assert all(f["source"].startswith("dist/") for f in artifact["files"])
    artifact_path = resolved["workspace"]["artifact_path"]
    assert artifact_path.startswith(("/Volumes/", "/Workspace/")), f"{name}: artifact_path {artifact_path}"
    assert "${" not in artifact_path
    if resolved["bundle"].get("mode") == "development":
        # The CLI refuses a development target whose paths could collide with another user's copy.
        for key in ("root_path", "file_path", "artifact_path", "state_path"):
            value = resolved["workspace"].get(key, "")
            assert not value or USER in value, f"{name}: workspace.{key} {value} is not specific to the user"


def test_one_job_resource_per_scilens_job():
    config, sources = load_bundle()
    entries = job_entry_points()
    assert sorted(entries.values()) == sorted(cli.JOBS)
    for stem, name in entries.items():
        key = name.replace("-", "_")  # resources and configs take the job's name; entry points may add "_"
        assert key in config["resources"]["jobs"], f"no job resource for jobs/{stem}.py"
        assert sources[key] == BUNDLE.parent / "resources" / f"{key}.yml"
        (task,) = _tasks(config["resources"]["jobs"][key])
        file = (sources[key].parent / task["spark_python_task"]["python_file"]).resolve()
        assert file == ROOT / "jobs" / f"{stem}.py", f"{sources[key]} runs {file}"


def test_jobs_parse_into_the_jobs_api_with_no_field_dropped(target):
    name, resolved, sources = target
    for key, job in jobs(resolved).items():
        sent = {k: v for k, v in job.items() if k not in BUNDLE_ONLY_JOB_KEYS}
        settings = JobSettings.from_dict(sent)
        assert settings.as_dict() == sent, f"{sources[key]} ({name}): JobSettings dropped or changed a field"
        assert settings.tasks and all(t.spark_python_task for t in settings.tasks)


def test_tasks_run_an_entry_point_with_a_config_the_job_accepts(target):
    name, resolved, sources = target
    config, _ = load_bundle()
    synced = _sync_paths(config)
    entries = job_entry_points()
    file_path = resolved["workspace"]["file_path"]
    for key, job in jobs(resolved).items():
        for task in _tasks(job):
            where = f"{sources[key]}: task {task['task_key']} ({name})"
            python_task = task["spark_python_task"]
            entry = (sources[key].parent / python_task["python_file"]).resolve()
            assert entry.parent == ROOT / "jobs" and entry.is_file(), f"{where}: {entry} is not a jobs/ entry point"
            assert any(entry.is_relative_to(p) for p in synced), f"{where}: {entry} is not synced"
            params = python_task["parameters"]
            remote_config = _param(params, "--config")
            # ${workspace.file_path} mirrors the sync root, here the repository root.
            assert remote_config.startswith(file_path + "/"), f"{where}: --config {remote_config}"
            assert file_path.startswith("/Workspace/"), f"{where}: the driver reads {file_path} as a local path"
            local_config = ROOT / remote_config[len(file_path) + 1:]
            assert local_config.is_file() and any(local_config.is_relative_to(p) for p in synced), where
            own = entries[entry.stem].replace("-", "_")
            assert local_config == ROOT / "conf" / f"{own}.yaml", f"{where}: config of another job"
            # The job's own CLI accepts the arguments and its config the file with the --set overrides.
            job_impl = cli.load_job(entries[entry.stem])
            args = cli._job_parser(job_impl).parse_args(params)
            load_config(job_impl.config_class, local_config, args.set)
            for value in (args.input, args.output, *(s.split("=", 1)[1] for s in args.set if "/" in s)):
                if value.startswith("/") and not value.startswith(("/Users/", "/Shared/")):  # MLflow paths
                    assert value.startswith("/Volumes/"), f"{where}: {value} is not on a Unity Catalog volume"


def test_clusters_are_dedicated_on_a_listed_runtime(target):
    name, resolved, sources = target
    for key, job in jobs(resolved).items():
        clusters = _clusters(job)
        assert clusters, f"{sources[key]}: no job cluster"
        keys = {k for k, _ in clusters}
        for task in _tasks(job):
            assert "existing_cluster_id" not in task, f"{sources[key]}: task {task['task_key']} on a shared cluster"
            assert task.get("job_cluster_key") in keys or "new_cluster" in task, f"{sources[key]}: {task['task_key']}"
        for cluster_key, cluster in clusters:
            where = f"{sources[key]}: cluster {cluster_key} ({name})"
            assert cluster.get("data_security_mode") in DEDICATED, f"{where}: not single-user"
            assert cluster["spark_version"] in RUNTIMES, f"{where}: runtime {cluster['spark_version']} not listed"
            assert runtime_file(cluster["spark_version"]).is_file(), where
            assert cluster["spark_version"] == CURRENT, f"{where}: the bundle is for the current stack"
            assert all(isinstance(v, str) for v in cluster.get("spark_conf", {}).values()), where
    image_jobs = [jobs(resolved)[k] for k in ("ingest", "neuro")]
    for job in image_jobs:  # read when the JVM starts: scilens cannot add it to a running cluster
        for _, cluster in _clusters(job):
            assert cluster["spark_conf"]["spark.serializer.objectStreamReset"] == "1"


def test_libraries_never_come_from_the_dbfs_root(target):
    name, resolved, sources = target
    (artifact,) = resolved["artifacts"].values()
    built = [str((BUNDLE.parent / artifact["path"] / f["source"]).resolve()) for f in artifact["files"]]
    declared = _declared_requirements()
    shipped = runtime_packages(CURRENT)
    for key, job in jobs(resolved).items():
        for task in _tasks(job):
            where = f"{sources[key]}: task {task['task_key']} ({name})"
            wheels = []
            for library in task.get("libraries", []):
                for kind, value in library.items():
                    if isinstance(value, str):
                        assert not value.lower().startswith(("dbfs:/", "/dbfs/")), f"{where}: {kind} {value}"
                if "whl" in library:
                    wheels.append(str((sources[key].parent / library["whl"]).resolve()))
                if "pypi" in library:
                    req = Requirement(library["pypi"]["package"])
                    assert normalize(req.name) in declared, f"{where}: {req.name} is not a scilens dependency"
                    # Installing it must not replace what the runtime ships.
                    assert normalize(req.name) not in shipped, f"{where}: {CURRENT} already ships {req.name}"
            assert any(fnmatch.fnmatch(w, pattern) for w in wheels for pattern in built), \
                f"{where}: does not install the wheel the bundle builds ({built})"


def _declared_requirements() -> set[str]:
    import tomllib  # here: ruff sorts it as stdlib or not depending on the configured target version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        specs.extend(group)
    return {normalize(Requirement(s).name) for s in specs}


def test_glaucoma_chain(target):
    name, resolved, _ = target
    chain = jobs(resolved)["glaucoma_chain"]
    tasks = {t["task_key"]: t for t in _tasks(chain)}
    after = {key: {d["task_key"] for d in t.get("depends_on", [])} for key, t in tasks.items()}
    assert after == {"cohort": set(), "clinical": {"cohort"}, "images": {"cohort"}, "train_oct": {"images"},
                     "train_cfp": {"images"}, "infer": {"train_oct", "train_cfp"}, "final": {"infer", "clinical"}}
    runs = {k: Path(t["spark_python_task"]["python_file"]).stem for k, t in tasks.items()}
    assert runs == {"cohort": "glaucoma_cohort", "clinical": "glaucoma_clinical", "images": "glaucoma_images",
                    "train_oct": "glaucoma_train", "train_cfp": "glaucoma_train", "infer": "glaucoma_infer",
                    "final": "glaucoma_final"}
    # Each link reads what the one before wrote.
    out = {k: _param(t["spark_python_task"]["parameters"], "--output") for k, t in tasks.items()}
    params = {k: t["spark_python_task"]["parameters"] for k, t in tasks.items()}
    assert _param(params["images"], "--set") == f"cohort={out['cohort']}"
    assert _param(params["train_oct"], "--input") == _param(params["infer"], "--input") == out["images"]
    assert f"oct_model={out['train_oct']}" in params["infer"] and f"cfp_model={out['train_cfp']}" in params["infer"]
    assert "modality=cfp" in params["train_cfp"] and "modality=oct" in params["train_oct"]
    assert _param(params["final"], "--input") == out["infer"]
    assert f"clinical={out['clinical']}" in params["final"] and f"cohort={out['cohort']}" in params["final"]
    schedule = chain["schedule"]
    assert re.fullmatch(r"\S+( \S+){5,6}", schedule["quartz_cron_expression"]), "quartz: seconds first, 6-7 fields"
    assert schedule["pause_status"] == "PAUSED", f"{name}: a deploy must not start scheduled runs by itself"
    assert chain["email_notifications"]["on_failure"] == [VARS["failure_email"]]
    assert all(job["email_notifications"]["on_failure"] == [VARS["failure_email"]] for job in jobs(resolved).values())
