"""`scilens glaucoma-images`: every good image preprocessed and labelled, every bad file quarantined with its reason."""

from __future__ import annotations

import json

import numpy as np

from scilens.core import tensor
from scilens.glaucoma.preprocess import OctPreprocessConfig, preprocess_oct
from tests.glaucoma.conftest import IMAGE_SIZE, N_SCANS


def test_good_volumes_become_labelled_scans(spark, retina_cohort, retina_images):
    scans = spark.read.parquet(str(retina_images / "oct_scans.parquet"))
    eyes = retina_cohort["eyes"].set_index(["eid", "eye"])
    good = retina_cohort["truth"]
    per_eye = scans.groupBy("eid", "eye", "label", "split").count().toPandas()
    assert len(per_eye) == len(good) and set(per_eye["count"]) == {N_SCANS}
    for row in per_eye.itertuples():  # labels and splits are the cohort's
        assert (row.label, row.split) == tuple(eyes.loc[(row.eid, row.eye), ["label", "split"]])
    # A stored scan is what the preprocessing step makes of the file, exactly.
    row = scans.where("scan = 3").orderBy("eid", "eye").limit(1).collect()[0]
    from scilens.io.retina import read_oct

    expected, _ = preprocess_oct(read_oct(row.path), row.eye, OctPreprocessConfig(image_size=IMAGE_SIZE))
    assert np.array_equal(tensor.decode(row.image), expected[3])
    photos = spark.read.parquet(str(retina_images / "fundus.parquet"))
    assert photos.count() == len(good)  # every good eye has its photo; the misnamed file is rejected
    assert tensor.decode(photos.first().image).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert (retina_images / "figures" / "oct_preprocessing.png").stat().st_size > 10_000
    assert (retina_images / "figures" / "excluded_oct.png").exists()
    assert (retina_images / "figures" / "cfp_preprocessing.png").exists()


def test_bad_files_are_rejected_with_their_reasons(spark, retina_cohort, retina_images):
    from pathlib import Path

    rejected = spark.read.parquet(str(retina_images / "_rejected" / "rejected.parquet")).toPandas()
    by_file = {Path(p).name: m for p, m in zip(rejected["path"], rejected["message"])}
    assert set(by_file) == set(retina_cohort["bad"])  # nothing good was rejected, nothing bad slipped through
    for name, reason in retina_cohort["bad"].items():
        assert reason in by_file[name] and name in by_file[name]
    manifest = json.loads((retina_images / "manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["counts"]["rejected"] == len(retina_cohort["bad"])


def test_guard_rows_groups_a_records_rows_and_still_rejects_it_whole():
    import pandas as pd

    from scilens.core.quarantine import REJECTED_COLUMN, guard_rows

    def produce(row):
        for i in range(5):
            if row["path"] == "bad" and i == 3:
                raise ValueError("scan 3 is damaged")
            yield {"path": row["path"], "scan": i}

    frames = list(guard_rows(pd.DataFrame({"path": ["a", "bad", "b"]}), produce, "read", ["path", "scan"],
                             rows_per_frame=2))
    # a: 2 + 2 + 1 rows; bad: one frame of 2 rows flushed before the failure, then its rejection; b: 2 + 2 + 1.
    assert [len(f) for f in frames] == [2, 2, 1, 2, 1, 2, 2, 1]
    rejected = [f for f in frames if f[REJECTED_COLUMN].notna().any()]
    assert len(rejected) == 1 and "scan 3 is damaged" in rejected[0][REJECTED_COLUMN][0]["message"]
    good = pd.concat([f for f in frames if f[REJECTED_COLUMN].isna().all()])
    assert sorted(good.loc[good.path == "a", "scan"]) == [0, 1, 2, 3, 4]
