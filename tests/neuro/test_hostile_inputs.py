"""What users bring: every NIfTI data type, wrong gradients, hostile subject names and manifests, bad configs.

One Spark job (``hostile_run``) takes a subject manifest listing, at once:

* a tiny phantom (16x16x8, one b0 and twelve directions) written in each data
  type NIfTI allows for diffusion data, each with and without
  ``scl_slope``/``scl_inter`` (ten subjects), each compared to the dipy
  reference on its own file;
* subjects named like run-level outputs (``voxels.parquet``, ``report.html``,
  ``manifest.json``), which must complete like any other;
* a subject whose ``.bval`` has negative b-values (must be quarantined, naming
  the file, instead of succeeding with wrong FA);
* bad manifest lines (an empty field, a duplicate subject, too many fields,
  traversal-looking names), each quarantined naming the manifest and line
  while the other lines go on; nothing is written outside ``--output``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bench.reference.neuro_ref import run_reference
from scilens import cli
from scilens.core.config import ConfigError
from scilens.io.nifti import resolve_subjects
from scilens.jobs.neuro import NeuroConfig
from scilens.neuro.denoise import DenoiseConfig
from scilens.neuro.dti import TensorFitConfig
from scilens.neuro.segment import SegmentConfig
from scilens.synth import dmri

SHAPE = (16, 16, 8)
VOLUMES = list(range(13))  # small_64D's b0 and its first twelve directions
SCALES = {  # (scl_slope, scl_inter) per data type; stored values stay inside the type's range
    "uint8": (10.0, 5.0), "int16": (0.5, -100.0), "int32": (0.25, 10.0), "float32": (2.0, 1.0),
    "float64": (0.5, 3.0)}
DTYPE_SUBJECTS = {f"{dtype}{'_scaled' if scaled else ''}": (dtype, SCALES[dtype] if scaled else None)
                  for dtype in SCALES for scaled in (False, True)}
RUN_LEVEL_NAMES = ("voxels.parquet", "report.html", "manifest.json")
NEGATIVE_B = (3, 7)  # volumes whose b-value is made negative in subject "negb"


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def hostile_run(spark, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("neuro-hostile")
    data = root / "data"
    lines = []
    for subject, (dtype, scale) in DTYPE_SUBJECTS.items():
        # uint8 without scaling holds 0..255: a white-matter b0 of 100 keeps CSF (2 x s0) and its noise inside.
        s0 = 100.0 if dtype == "uint8" and scale is None else 1000.0
        files = dmri.write_phantom(data, subject=subject, shape=SHAPE, snr=30, s0=s0, seed=11, dtype=dtype,
                                   volumes=VOLUMES, scale=scale, compressed=dtype != "int32")
        lines.append(f"{subject},{files.nifti.relative_to(root)},data/{subject}.bval,data/{subject}.bvec")
    bvals = np.loadtxt(data / "int16.bval")
    bvals[list(NEGATIVE_B)] *= -1
    np.savetxt(data / "negb.bval", bvals[None, :], fmt="%g")
    same = "data/int16.nii.gz,data/int16.bval,data/int16.bvec"
    lines += [f"{name},{same}" for name in RUN_LEVEL_NAMES]
    lines.append("negb,data/int16.nii.gz,data/negb.bval,data/int16.bvec")
    first_bad = len(lines) + 2  # header is line 1
    bad = {  # line -> (subject or record, what the message must say)
        first_bad: ("int16", f"subject 'int16' is already on line {list(DTYPE_SUBJECTS).index('int16') + 2}"),
        first_bad + 1: ("nobvec", "empty bvec"),
        first_bad + 2: ("../../escaped", "cannot name an output directory"),
        first_bad + 3: ("../../../escaped", "cannot name an output directory"),
        first_bad + 4: ("extra", "5 fields for the header's 4"),
    }
    lines += [f"int16,{same}", "nobvec,data/int16.nii.gz,data/int16.bval,", f"../../escaped,{same}",
              f"../../../escaped,{same}", f"extra,{same},surplus"]
    manifest = root / "subjects.csv"
    manifest.write_text("subject,nifti,bval,bvec\n" + "\n".join(lines) + "\n")
    before = _tree(root.parent)
    out = root / "out"
    code = cli.main(["neuro", "--input", str(manifest), "--output", str(out), "--set", "write_denoised=true"])
    return {"root": root, "out": out, "code": code, "manifest": manifest, "bad_lines": bad, "before": before,
            "after": _tree(root.parent)}


def _image(out: Path, subject: str, name: str) -> np.ndarray:
    return np.asanyarray(nib.load(str(out / "subjects" / subject / f"{name}.nii.gz")).dataobj)


@pytest.mark.parametrize("subject", sorted(DTYPE_SUBJECTS))
def test_every_nifti_data_type_equals_the_reference(hostile_run, subject):
    dtype, scale = DTYPE_SUBJECTS[subject]
    out, data = hostile_run["out"], hostile_run["root"] / "data"
    image = next(data.glob(f"{subject}.nii*"))
    img = nib.load(str(image))  # nibabel moves scl_slope/scl_inter from the header to the data proxy
    assert img.get_data_dtype() == np.dtype(dtype)  # the file really is of that type, scaled or not
    assert (img.dataobj.slope, img.dataobj.inter) == (scale or (1.0, 0.0))
    ref = run_reference(image, data / f"{subject}.bval", data / f"{subject}.bvec", num_threads=1)
    mask = _image(out, subject, "mask").astype(bool)
    assert np.array_equal(mask, ref.mask) and 0 < mask.sum() < mask.size
    denoised = _image(out, subject, "denoised")
    assert denoised.dtype == ref.denoised.dtype
    # Worker and test process may round differently; 1e-4 relative is far below the denoiser's effect.
    assert np.max(np.abs(denoised - ref.denoised.astype(np.float64)) / np.maximum(np.abs(ref.denoised), 1)) <= 1e-4
    assert np.max(np.abs(_image(out, subject, "fa") - ref.fa)) <= 1e-5
    assert np.max(np.abs(_image(out, subject, "md") - ref.md)) <= 1e-5
    assert np.mean(ref.fa[ref.mask]) > 0.1  # a real tensor fit, not an empty one
    voxels = pd.read_parquet(out / "voxels.parquet", filters=[("subject", "==", subject)])
    ijk = (voxels.i.to_numpy(), voxels.j.to_numpy(), voxels.k.to_numpy())
    assert len(voxels) == ref.mask.sum() and ref.mask[ijk].all()
    assert np.max(np.abs(voxels.fa.to_numpy() - ref.fa[ijk])) <= 1e-5


def test_subjects_named_like_run_outputs_complete(hostile_run):
    out = hostile_run["out"]
    assert hostile_run["code"] == 0
    manifest = json.loads((out / "manifest.json").read_text())  # still the run's manifest, a file
    assert manifest["counts"]["succeeded"] == len(DTYPE_SUBJECTS) + len(RUN_LEVEL_NAMES)
    assert (out / "report.html").is_file() and (out / "voxels.parquet").is_dir()
    for name in RUN_LEVEL_NAMES:  # the same file as subject int16: the same maps
        assert np.array_equal(_image(out, name, "fa"), _image(out, "int16", "fa")), name
        assert f"subjects/{name}/report.png" in (out / "report.html").read_text()
    names = set(pd.read_parquet(out / "voxels.parquet", columns=["subject"]).subject)
    assert names == set(DTYPE_SUBJECTS) | set(RUN_LEVEL_NAMES)


def _rejected(spark, out: Path) -> list:
    return spark.read.parquet(str(out / "_rejected" / "rejected.parquet")).collect()


def test_negative_b_values_are_quarantined_naming_the_file(spark, hostile_run):
    out, data = hostile_run["out"], hostile_run["root"] / "data"
    (record,) = [r for r in _rejected(spark, out) if r.record == "negb"]
    assert record.step == "segment"
    bvals = np.loadtxt(data / "negb.bval")
    shown = ", ".join(f"{v} ({bvals[v]:g})" for v in NEGATIVE_B)
    assert f"negative b-value for volume(s) {shown} in {data / 'negb.bval'}" in record.message
    assert all(bvals[v] < -900 for v in NEGATIVE_B)  # what the file says: diffusion-weighted volumes, sign flipped
    assert not (out / "subjects" / "negb").exists()


def test_bad_manifest_lines_are_quarantined_the_others_go_on(spark, hostile_run):
    out, manifest = hostile_run["out"], hostile_run["manifest"]
    listed = {r.message: r for r in _rejected(spark, out) if r.step == "list subjects"}
    assert len(listed) == len(hostile_run["bad_lines"])
    for line, (record, problem) in hostile_run["bad_lines"].items():
        (hit,) = [r for m, r in listed.items() if m.startswith(f"{manifest} line {line}: ")]
        assert problem in hit.message and hit.record == record and hit.path == str(manifest)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["rejected"] == len(hostile_run["bad_lines"]) + 1  # and negb


def test_traversal_names_write_nothing_outside_the_output(hostile_run):
    root, out = hostile_run["root"], hostile_run["out"]
    outside = {p for p in hostile_run["after"] - hostile_run["before"] if not (root.parent / p).is_relative_to(out)}
    assert outside == set()
    assert not (root / "escaped").exists() and not (root.parent / "escaped").exists()
    assert {p.name for p in (out / "subjects").iterdir()} == set(DTYPE_SUBJECTS) | set(RUN_LEVEL_NAMES)


def test_file_names_that_cannot_name_a_subject_are_quarantined(tmp_path):
    for stem in ("_hidden", "tab\there", "good"):
        (tmp_path / f"{stem}.nii").write_bytes(b"")
        (tmp_path / f"{stem}.bval").write_text("0\n")
        (tmp_path / f"{stem}.bvec").write_text("0\n0\n0\n")
    subjects, rejected = resolve_subjects([str(tmp_path)])  # was: InputError, the whole run refused
    assert [s["subject"] for s in subjects] == ["good"]
    assert {r["record"]: r["path"] for r in rejected} == {"_hidden": str(tmp_path / "_hidden.nii"),
                                                         "tab\there": str(tmp_path / "tab\there.nii")}
    assert all("cannot name an output directory" in r["message"] for r in rejected)


def _numeric_fields(cls: type) -> list[tuple[str, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        args = set(typing.get_args(hints[f.name])) or {hints[f.name]}
        if args & {int, float} or hints[f.name] == list[int]:
            found.append((f"{cls.__name__}.{f.name}", f))
    return found


def test_every_numeric_neuro_setting_is_bounded(tmp_path, capsys):
    own = [f.name for f in dataclasses.fields(NeuroConfig)
           if f.name in ("b0_threshold", "block_shape", "volumes_per_task", "fit_partitions", "arrow_batch_mb")]
    assert len(own) == 5
    fields = [(n, f) for cls in (SegmentConfig, DenoiseConfig, TensorFitConfig) for n, f in _numeric_fields(cls)]
    fields += [(n, f) for n, f in _numeric_fields(NeuroConfig) if n.split(".")[1] in own]
    assert len(fields) == 10
    for name, f in fields:
        assert f.metadata.get("min") is not None and f.metadata.get("max") is not None, name
    out = tmp_path / "out"
    assert cli.main(["neuro", "--input", str(tmp_path), "--output", str(out),
                     "--set", "fit_partitions=3000000000"]) == 2
    assert "fit_partitions: 3000000000 is above the maximum 100000" in capsys.readouterr().err
    for override in ("denoise.block_radius=1000", "segment.median_radius=10000", "block_shape=[32,32,100000]",
                     "b0_threshold=100000", "arrow_batch_mb=1000000"):
        with pytest.raises(ConfigError, match="above the maximum"):
            NeuroConfig().with_overrides([override])
    with pytest.raises(ConfigError, match="b0_threshold: nan is not a finite number"):
        NeuroConfig(b0_threshold=float("nan"))
    assert not out.exists()
