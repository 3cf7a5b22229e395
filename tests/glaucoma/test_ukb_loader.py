"""scilens.io.ukb: a hand-written export read right, special codes kept, bad input named; Spark = pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scilens.core.inputs import InputError
from scilens.core.session import set_arrow_batch_bytes
from scilens.io import ukb
from tests.glaucoma.conftest import hand_built_export


@pytest.fixture(scope="module")
def field_map() -> ukb.FieldMap:
    return ukb.load_field_map()


def _visits(spark, path, field_map):
    visits, rejected = ukb.read_export(spark, [str(path)], field_map)
    return visits.toPandas().sort_values(["eid", "visit"]).reset_index(drop=True), rejected.toPandas()


def test_field_map_has_the_issue_field_ids(field_map):
    ids = {row["feature"]: row["field"] for row in ukb.describe_fields(field_map)}
    assert ids == {"age": 21003, "sex": 31, "ethnicity": 21000, "bmi": 21001, "fvc": 3062, "pef": 3064,
                   "pulse_rate": 102, "diastolic_bp": 4079, "systolic_bp": 4080, "diabetes": 2443,
                   "caffeine": 3089, "nicotine": 3159, "iop_right": 5255, "iop_left": 5263,
                   "corneal_hysteresis_right": 5256, "corneal_hysteresis_left": 5264,
                   "corneal_resistance_factor_right": 5257, "corneal_resistance_factor_left": 5265,
                   "visual_acuity_logmar_right": 5201, "visual_acuity_logmar_left": 5208,
                   "eye_problems": 6148, "glaucoma_eyes": 6119, "hospital_icd10": 41270}
    assert all(spec.verified for spec in field_map.fields.values())


def test_hand_written_export_with_special_codes(spark, hand_export, field_map):
    visits, rejected = _visits(spark, hand_export, field_map)
    assert rejected.empty
    assert len(visits) == 16  # 12 participants at visit 0, four of them again at visit 1
    by = visits.set_index(["eid", "visit"])
    one = by.loc[(1003, 0)]
    assert one["fvc"] == 3.4                       # best of the blows 3.1, 3.4 and an empty one
    assert one["systolic_bp"] == 125.0 and one["diastolic_bp"] == 82.0 and one["pulse_rate"] == 71.0  # means
    assert (one["iop_right"], one["iop_left"]) == (15.5, 16.5)
    assert (one["visual_acuity_logmar_right"], one["visual_acuity_logmar_left"]) == (0.0, 0.1)
    assert list(one["eye_problems"]) == [-7] and pd.isna(one["glaucoma_eyes"])
    assert by.loc[(1003, 1), "age"] == 64 and np.isnan(by.loc[(1003, 1), "iop_right"])
    assert by.loc[(1003, 1), "sex"] == 1          # participant-level field copied to the later visit
    assert list(by.loc[(1007, 0), "eye_problems"]) == [2, 4]
    assert list(by.loc[(1008, 0), "eye_problems"]) == [-1]          # "do not know" kept for the rules
    assert by.loc[(1010, 0), "glaucoma_eyes"] == -3                  # "prefer not to answer" kept
    assert by.loc[(1011, 0), "diabetes"] == -3 and by.loc[(1011, 0), "ethnicity"] == -3
    assert list(by.loc[(1005, 0), "hospital_icd10"]) == ["I10", "K573"]
    assert by.loc[(1005, 0), "hospital_icd10"] is not None and by.loc[(1001, 0), "hospital_icd10"] is None
    assert by.loc[(1012, 0), "eye_problems"] is None
    assert by.loc[(1006, 1), "fvc"] == 2.9 and by.loc[(1006, 1), "glaucoma_eyes"] == 1


def test_spark_reader_equals_pandas_reference(spark, synthetic_export, field_map):
    ours, rejected = _visits(spark, synthetic_export, field_map)
    reference = ukb.read_export_pandas([synthetic_export], field_map).sort_values(["eid", "visit"])
    reference = reference.reset_index(drop=True)
    assert rejected.empty and len(ours) == len(reference) > 8000
    for column in reference.columns:
        a, b = reference[column], ours[column]
        if a.dtype == object:
            assert [None if x is None else list(x) for x in a] == [None if y is None else list(y) for y in b], column
        else:
            assert np.allclose(a.astype(float), b.astype(float), equal_nan=True), column


def test_missing_required_field_fails_before_work(spark, tmp_path, field_map):
    export = hand_built_export().drop(columns=["5263-0.0", "5263-1.0"])
    export.to_csv(tmp_path / "export.csv", index=False)
    with pytest.raises(InputError, match=r"lacks required field\(s\) 5263 \(iop:"):
        ukb.read_export(spark, [str(tmp_path / "export.csv")], field_map)


def test_text_where_numbers_belong_fails_before_work(spark, tmp_path, field_map):
    export = hand_built_export()
    export["21001-0.0"] = "overweight"
    export.to_csv(tmp_path / "export.csv", index=False)
    with pytest.raises(InputError, match=r"column 21001-0.0 \(bmi\) holds text, not numbers: none of its 12 "
                                         r"non-empty values in the export's first 12 rows") as raised:
        ukb.read_export(spark, [str(tmp_path / "export.csv")], field_map)
    assert "overweight" not in str(raised.value)  # participant data is not quoted


def test_bad_records_are_rejected_and_the_rest_kept(spark, tmp_path, field_map):
    export = hand_built_export()
    export.loc[export["eid"] == "1001", "6148-0.0"] = "9"       # no such code in data-coding 100523
    export.loc[export["eid"] == "1002", "21001-0.0"] = "27,5"   # not a number
    export.to_csv(tmp_path / "export.csv", index=False)
    visits, rejected = _visits(spark, tmp_path / "export.csv", field_map)
    assert set(visits["eid"]) == {1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012}
    messages = dict(zip(rejected["record"], rejected["message"]))
    assert set(messages) == {"1001", "1002"}
    # The eid, the column and the rule; never the participant's value (see test_privacy).
    assert "eid 1001: column 6148-0.0 (eye_problems, field 6148) holds a code not in its coding" in messages["1001"]
    assert messages["1002"] == "eid 1002: column 21001-0.0 (bmi, field 21001) holds text that is not a number"
    assert all(path.endswith("export.csv") for path in rejected["path"])


def test_arrow_batches_can_be_raised_for_tabular_rows(spark):
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    try:
        assert set_arrow_batch_bytes(spark, 1024, 2**20) == min(int(before), 1024)
        assert set_arrow_batch_bytes(spark, 1024, 2**20, raise_limit=True) == 1024
    finally:
        spark.conf.set(key, before)


def test_tsv_parquet_and_split_exports_read_the_same(spark, tmp_path, hand_export, field_map):
    reference, _ = _visits(spark, hand_export, field_map)
    export = hand_built_export()
    export.to_csv(tmp_path / "export.tsv", sep="\t", index=False)
    export.to_parquet(tmp_path / "export.parquet", index=False)
    # a basket download in two files with different columns, joined on eid
    left = [c for c in export.columns if c == "eid" or not c.startswith(("52", "6148"))]
    right = [c for c in export.columns if c == "eid" or c.startswith(("52", "6148"))]
    export[left].to_csv(tmp_path / "part1.csv", index=False)
    export[right].iloc[::-1].to_csv(tmp_path / "part2.csv", index=False)
    for paths in ([tmp_path / "export.tsv"], [tmp_path / "export.parquet"], [tmp_path / "part1.csv",
                                                                             tmp_path / "part2.csv"]):
        visits, rejected = ukb.read_export(spark, [str(p) for p in paths], field_map)
        ours = visits.toPandas().sort_values(["eid", "visit"]).reset_index(drop=True)
        assert rejected.count() == 0 and len(ours) == len(reference)
        for column in ("iop_left", "fvc", "glaucoma_eyes", "age"):
            assert np.allclose(ours[column].astype(float), reference[column].astype(float), equal_nan=True), paths
        assert [None if v is None else list(v) for v in ours["eye_problems"]] == \
            [None if v is None else list(v) for v in reference["eye_problems"]]
