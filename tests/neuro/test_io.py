"""The shared pieces the neuro job added: subject manifests, streamed 4-D NIfTI writing, path frames, batch sizes."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from scilens.core.inputs import InputError, paths_frame
from scilens.core.session import arrow_batch_bytes
from scilens.io import nifti
from scilens.io.nifti import read_manifest


def test_manifest_resolves_paths_and_quarantines_bad_lines(tmp_path):
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "subjects.csv"
    manifest.write_text("subject,nifti,bval,bvec\nsub-01,data/a.nii.gz,data/a.bval,/abs/a.bvec\n"
                        " 007 , data/b.nii , data/b.bval , data/b.bvec \n"
                        "s,a.nii,,a.bvec\nsub-01,c.nii,c.bval,c.bvec\n")
    subjects, rejected = read_manifest(str(manifest))
    assert subjects == [
        {"subject": "sub-01", "path": str(tmp_path / "data/a.nii.gz"), "bval_path": str(tmp_path / "data/a.bval"),
         "bvec_path": "/abs/a.bvec"},
        {"subject": "007", "path": str(tmp_path / "data/b.nii"), "bval_path": str(tmp_path / "data/b.bval"),
         "bvec_path": str(tmp_path / "data/b.bvec")},
    ]
    messages = [r["message"] for r in rejected]
    assert len(messages) == 2 and "line 4: empty bval" in messages[0]
    assert "line 5: subject 'sub-01' is already on line 2" in messages[1]
    # A file that is not a manifest as a whole is refused, not quarantined line by line.
    for text, message in {"subject,nifti,bval\ns,a.nii,a.bval\n": "lacks column(s) bvec",
                          "subject,nifti,bval,bvec\n": "lists no subjects"}.items():
        manifest.write_text(text)
        with pytest.raises(InputError, match=re.escape(message)):
            read_manifest(str(manifest))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_streamed_4d_writer_equals_nibabel(tmp_path, suffix):
    rng = np.random.default_rng(0)
    data = rng.integers(-300, 3000, size=(7, 5, 4, 6)).astype(np.int16)
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2.5, -72], [0, 0, 0, 1]])
    ours = nifti.write_nifti_volumes(tmp_path / f"ours{suffix}", (data[..., v] for v in range(6)), data.shape,
                                     np.int16, affine)
    theirs = tmp_path / f"theirs{suffix}"
    nifti.write_nifti(theirs, data, affine)
    a, b = nib.load(str(ours)), nib.load(str(theirs))
    assert np.array_equal(np.asanyarray(a.dataobj), data) and a.get_data_dtype() == np.int16
    assert np.array_equal(a.affine, b.affine)
    assert a.header.binaryblock == b.header.binaryblock  # the same header nibabel writes
    with pytest.raises(ValueError, match="got 5 volumes"):
        nifti.write_nifti_volumes(tmp_path / f"short{suffix}", (data[..., v] for v in range(5)), data.shape,
                                  np.int16, affine)
    assert not (tmp_path / f"short{suffix}").exists()  # no truncated file left behind


def test_paths_frame_carries_columns_one_file_per_partition(spark):
    frame = paths_frame(spark, ["/a.nii", "/b.nii"], {"subject": ["a", "b"], "bval_path": ["/a.bval", None]})
    assert frame.rdd.getNumPartitions() == 2
    assert [r.asDict() for r in frame.collect()] == [{"path": "/a.nii", "subject": "a", "bval_path": "/a.bval"},
                                                     {"path": "/b.nii", "subject": "b", "bval_path": None}]
    with pytest.raises(ValueError, match="has 1 values for 2 paths"):
        paths_frame(spark, ["/a", "/b"], {"subject": ["a"]})


def test_arrow_batch_bytes_restores_the_session_value(spark):
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    with arrow_batch_bytes(spark, row_bytes=2**30) as rows:
        assert rows == 1 and spark.conf.get(key) == "1"
    assert spark.conf.get(key) == before


def test_cached_volume_rows_are_cached_one_per_batch(spark):
    from pyspark.sql import functions as F

    from scilens.core.session import cached_batch_rows

    key = "spark.sql.inMemoryColumnarStorage.batchSize"
    before = spark.conf.get(key, None)

    def cached_batches(rows: int | None):
        frame = spark.range(0, 12, numPartitions=1).withColumn("volume", F.expr("repeat('x', 1000)"))
        if rows is None:
            frame = frame.persist()
            frame.count()
        else:
            with cached_batch_rows(spark, rows):
                frame = frame.persist()
                frame.count()
        cached = spark._jsparkSession.sharedState().cacheManager().lookupCachedData(frame._jdf).get()
        batches = cached.cachedRepresentation().cacheBuilder().cachedColumnBuffers().count()
        frame.unpersist()
        return batches

    # Spark's default builds all 12 rows of the partition into one batch in the JVM heap (for volumes:
    # a whole subject at once); inside the block each row is a batch of its own.
    assert cached_batches(None) == 1
    assert cached_batches(1) == 12
    assert spark.conf.get(key, None) == before
