"""glaucoma-cohort never echoes a participant's raw values: rejections name the eid, the field and the rule.

What a run prints and writes about bad records (the terminal, ``manifest.json``'s
``rejected_examples``, ``_rejected/rejected.parquet``) travels further than the export itself: it
is pasted into bug reports and kept with logs. A value from the export must appear in none of them.
"""

from __future__ import annotations

import io
import json
import logging

import pandas as pd

from scilens import cli
from scilens.synth import ukb as synth
from tests.glaucoma.conftest import TEST_MODEL

SECRET = "SECRET-PARTICIPANT-TEXT-7f3a"
SECRET_CODE = "918273645"  # a number, so it reaches the code check rather than the number check


def test_rejections_name_eid_field_and_rule_never_the_value(spark, tmp_path, capfd):
    export_path = synth.write_cohort(tmp_path / "ukb", 1500, 5, TEST_MODEL)
    export = pd.read_csv(export_path, dtype=str, keep_default_na=False)
    eids = export["eid"].tolist()
    text_eid, code_eid = eids[5], eids[17]
    export.loc[export["eid"] == text_eid, "21003-0.0"] = f"{SECRET} (age)"
    export.loc[export["eid"] == code_eid, "6148-0.0"] = SECRET_CODE
    export.loc[29, "eid"] = f"{SECRET}-in-the-eid-column"
    export.loc[41, "eid"] = "31415926.5"  # not a whole number: its text is withheld too
    export.to_csv(export_path, index=False)

    out = tmp_path / "cohort"
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)  # what the job logs is what reaches the terminal
    logging.getLogger("scilens").addHandler(handler)
    try:
        code = cli.main(["glaucoma-cohort", "--input", str(export_path), "--output", str(out),
                         "--set", "healthy_per_glaucoma=1.0", "--set", "splits.test_eyes_per_class=10",
                         "--set", "splits.validation_eyes=20", "--set", "buckets=2"])
    finally:
        logging.getLogger("scilens").removeHandler(handler)
    captured = capfd.readouterr()
    assert code == 0  # the bad participants are rejected, the others selected

    rejected = pd.read_parquet(out / "_rejected" / "rejected.parquet")
    manifest_text = (out / "manifest.json").read_text()
    places = {"log": logged.getvalue(), "stderr": captured.err, "stdout": captured.out,
              "manifest.json": manifest_text, "rejected.parquet": rejected.to_csv(index=False)}
    for where, text in places.items():
        for secret in (SECRET, SECRET_CODE, "31415926"):
            assert secret not in text, (where, secret)

    # Still useful: each rejection names the eid (the record), the column and field, and the rule.
    by_record = dict(zip(rejected["record"], rejected["message"]))
    assert by_record[text_eid] == f"eid {text_eid}: column 21003-0.0 (age, field 21003) holds text that is not a number"
    assert by_record[code_eid].startswith(f"eid {code_eid}: column 6148-0.0 (eye_problems, field 6148) holds a "
                                          "code not in its coding (")
    malformed = rejected.loc[rejected["record"] == "", "message"].tolist()
    assert malformed == ["a row whose eid is not a whole number (its text is withheld)"] * 2
    assert len(rejected) == 4 and all(p.endswith("ukb_export.csv") for p in rejected["path"])
    examples = json.loads(manifest_text)["rejected_examples"]
    assert {e["record"] for e in examples} == {text_eid, code_eid, ""}
    assert "rejected" in logged.getvalue()  # the terminal does report the rejections


def test_a_malformed_line_is_rejected_by_eid_without_printing_it(spark, tmp_path, capfd):
    """A line with more or fewer fields than the header: before, FAILFAST aborted the read and Spark's
    error printed the whole line (every value of the participant), several times."""
    from scilens.io import ukb
    from tests.glaucoma.conftest import hand_built_export

    clean, path = tmp_path / "clean.csv", tmp_path / "export.csv"  # two paths: Spark caches the first read
    hand_built_export().to_csv(clean, index=False)
    field_map = ukb.load_field_map()
    reference = ukb.read_export(spark, [str(clean)], field_map)[0].toPandas().set_index(["eid", "visit"]).sort_index()
    lines = clean.read_text().splitlines()
    assert lines[3].startswith("1003,") and lines[5].startswith("1005,")
    lines[3] += f",{SECRET},more"                    # two fields too many
    lines[5] = f"1005,{SECRET}"                       # most fields missing
    path.write_text("\n".join(lines) + "\n")
    capfd.readouterr()
    visits, rejected = ukb.read_export(spark, [str(path)], field_map)
    visits, rejected = visits.toPandas().set_index(["eid", "visit"]).sort_index(), rejected.toPandas()
    captured = capfd.readouterr()
    assert SECRET not in captured.err + captured.out and SECRET not in rejected.to_csv(index=False)
    assert dict(zip(rejected["record"], rejected["message"])) == {
        eid: f"eid {eid}: its line has more or fewer fields than the export's header, so its values may be in "
             "the wrong columns" for eid in ("1003", "1005")}
    # The other participants are read as before.
    expected = reference.drop(index=[1003, 1005], level="eid")
    assert visits.index.equals(expected.index)
    pd.testing.assert_frame_equal(visits.astype(str), expected.astype(str))
