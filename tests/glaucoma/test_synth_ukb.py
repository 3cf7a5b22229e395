"""scilens.synth.ukb: deterministic, realistic marginals, and cohort sizes near the dissertation's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from scilens.glaucoma import cohort
from scilens.io import ukb
from scilens.synth import ukb as synth


def test_generator_is_deterministic_and_writes_its_truth(tmp_path):
    a = synth.export_frame(synth.simulate(300, seed=4))
    assert a.equals(synth.export_frame(synth.simulate(300, seed=4)))
    assert not a.equals(synth.export_frame(synth.simulate(300, seed=5)))
    path = synth.write_cohort(tmp_path, 200, seed=1, file_format="parquet")
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["model"]["beta_iop"] == synth.GlaucomaModel().beta_iop and truth["participants"] == 200
    assert len(pd.read_parquet(tmp_path / "truth.parquet")) == 200
    assert pd.read_parquet(path).shape[0] == 200


def test_quarter_size_cohort_lands_near_the_papers_groups():
    # A quarter of the 96,020 participants should give a quarter of the paper's groups: glaucoma
    # 863/4 = 216 subjects (Poisson sd ~15; we allow +-30% for the generator's approximations),
    # 1.38 eyes per glaucoma subject, PTG 55/4 = 14 subjects (Poisson sd ~4: 4 to 28).
    sim = synth.simulate(synth.N_PARTICIPANTS // 4, seed=2)
    export = synth.export_frame(sim)
    field_map = ukb.load_field_map()
    visits = ukb.decode_export(export, field_map, ukb.check_export(list(export.columns), field_map))
    assert visits["_rejected"].isna().all()
    rows = cohort.select_rows(visits.drop(columns="_rejected"), cohort.CohortRules())
    eyes = rows[rows["kind"] == "eye"]
    subjects = eyes.drop_duplicates("eid")["label"].value_counts()
    assert 0.7 * 863 / 4 <= subjects["glaucoma"] <= 1.3 * 863 / 4
    assert 1.2 <= (eyes["label"] == "glaucoma").sum() / subjects["glaucoma"] <= 1.6
    assert 4 <= subjects["ptg"] <= 28
    # eligible healthy participants are plenty: the paper's 771 are a draw of them
    assert subjects["healthy"] > 5 * 771 / 4

    # marginals at baseline against UK Biobank's published ones (Chan et al. 2016: IOPg 15.7 +- 3.8
    # mmHg, ages 40-69, 54% women): a 24,000-person sample estimates them to within ~0.1
    a = sim.arrays
    iop = a["iop"][:, 0][~np.isnan(a["iop"][:, 0])]
    assert abs(iop.mean() - 15.7) < 0.6 and 3.0 < iop.std() < 4.5
    assert 40 <= a["age"][:, 0].min() and a["age"][:, 0].max() < 70
    assert abs(a["male"].mean() - 0.456) < 0.02
