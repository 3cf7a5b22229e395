"""A one-page HTML report that several jobs add to.

A :class:`Report` is a list of sections (title, text, tables, PNG figures). ``save(dir)``
writes ``report.html`` (figures embedded, one self-contained page) and ``report.json`` (the
sections, figures base64-encoded). Another job loads the JSON and adds its own sections, e.g.
the imaging engineer's final model next to BM1-BM3::

    report = Report.load(clinical_output / "report.json")
    report.add("Final model", text="...", figures={"roc.png": png_bytes}, after="Baseline models")
    report.save(imaging_output)

:func:`clinical_report`, :func:`final_report` and :func:`stats_report` assemble the glaucoma jobs'
reports from their metrics and figures.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from scilens.glaucoma.config import GlaucomaClinicalConfig, GlaucomaStatsConfig

__all__ = ["Report", "Section", "clinical_report", "final_report", "markdown_table", "stats_report",
           "upstream_metrics"]


@dataclass
class Section:
    """One part of the report."""

    title: str
    text: str = ""
    tables: dict[str, list[dict]] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)  # name -> base64 PNG


@dataclass
class Report:
    """Sections in order; see the module doc."""

    title: str
    sections: list[Section] = field(default_factory=list)

    def add(self, title: str, text: str = "", tables: dict[str, pd.DataFrame] | None = None,
            figures: dict[str, bytes] | None = None, after: str | None = None) -> Section:
        """Add a section at the end, or right after the section titled ``after`` (replacing one of the same title)."""
        section = Section(title, text,
                          {name: _records(frame) for name, frame in (tables or {}).items()},
                          {name: base64.b64encode(png).decode() for name, png in (figures or {}).items()})
        self.sections = [s for s in self.sections if s.title != title]
        titles = [s.title for s in self.sections]
        where = titles.index(after) + 1 if after in titles else len(self.sections)
        self.sections.insert(where, section)
        return section

    def figure(self, title: str, name: str) -> bytes:
        """The PNG of figure ``name`` in section ``title``."""
        section = next(s for s in self.sections if s.title == title)
        return base64.b64decode(section.figures[name])

    def save(self, directory: str | Path) -> Path:
        """Write ``report.html`` and ``report.json`` into ``directory``; return the HTML path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "report.json").write_text(json.dumps(asdict(self)) + "\n")
        path = directory / "report.html"
        path.write_text(self.html())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a ``report.json`` (or the directory holding it)."""
        path = Path(path)
        data = json.loads((path / "report.json" if path.is_dir() else path).read_text())
        return cls(data["title"], [Section(**s) for s in data["sections"]])

    def html(self) -> str:
        """The report as one self-contained HTML page (figures embedded)."""
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
                 "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
                 "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
                 "font-size:90%;text-align:right}img{max-width:48%;margin:2px}</style></head><body>",
                 f"<h1>{html.escape(self.title)}</h1>"]
        for s in self.sections:
            parts.append(f"<h2>{html.escape(s.title)}</h2>")
            if s.text:
                parts += [f"<p>{html.escape(p)}</p>" for p in s.text.split("\n\n")]
            for name, rows in s.tables.items():
                parts.append(f"<h3>{html.escape(name)}</h3>" + pd.DataFrame(rows).to_html(index=False, na_rep=""))
            parts += [f"<img alt='{html.escape(n)}' title='{html.escape(n)}' src='data:image/png;base64,{b}'>"
                      for n, b in s.figures.items()]
        parts.append("</body></html>")
        return "\n".join(parts)


def _records(frame: pd.DataFrame) -> list[dict]:
    def plain(v: Any) -> Any:
        if isinstance(v, float):
            return None if v != v else float(f"{v:.4g}")
        return v.item() if hasattr(v, "item") else v
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub markdown table (floats to 3 significant digits, small p-values in e-notation)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        return str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.astype(object).itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _ci_text(low: float, high: float, digits: int) -> str:
    return f"{low:.{digits}f}-{high:.{digits}f}"


def clinical_report(config: GlaucomaClinicalConfig, results: dict[str, dict], figures: dict[str, bytes],
                    eyes_path: str) -> Report:
    """The report of ``glaucoma-clinical``: cohort counts, baseline models, PTG, SHAP and interactions.

    Parameters
    ----------
    config
        The job's config (XGBoost, bootstrap and interaction settings are quoted).
    results
        Per model its entry of ``metrics.json``.
    figures
        The job's figures by file name; each section shows those of its kind.
    eyes_path
        The ``eyes.parquet`` read; the cohort's ``counts.csv`` beside it is shown when present.

    Returns
    -------
    Report
        Not yet saved.
    """
    report = Report("Glaucoma screening: clinical models")
    counts = Path(eyes_path).parent / "counts.csv"
    if counts.exists():
        report.add("Cohort", "Classes and exclusions of scilens glaucoma-cohort (dissertation Ch. 3 §3.2).",
                   tables={"counts": pd.read_csv(counts)})
    table = pd.DataFrame([{"model": n, "features": len(r["features"]), "test AUC": r["auc"],
                           "95% CI": _ci_text(r["ci_low"], r["ci_high"], 3), "accuracy": r["accuracy"],
                           "PTG accuracy": r["ptg_accuracy"],
                           "PTG 95% CI": (_ci_text(r["ptg_ci_low"], r["ptg_ci_high"], 2)
                                          if r["ptg_accuracy"] is not None else ""),
                           "rounds": r["rounds"]} for n, r in results.items()])
    boot = config.bootstrap
    report.add("Baseline models",
               f"XGBoost on Spark with learning rate {config.xgb.learning_rate}, L2 {config.xgb.reg_lambda}, "
               f"L1 {config.xgb.reg_alpha}, row subsampling {config.xgb.subsample}, early stopping on the "
               f"validation split ({config.xgb.eval_metric}). {boot.resamples} bootstrap resamples of "
               f"{boot.unit}s give the {boot.confidence:.0%} intervals.",
               tables={"test metrics": table},
               figures={k: v for k, v in figures.items() if k.startswith(("roc", "auc"))})
    if "ptg_accuracy.png" in figures:
        report.add("Progress-to-glaucoma", "Share of PTG eyes (healthy at the visit used, diagnosed later) "
                   "called glaucoma.", figures={"ptg_accuracy.png": figures["ptg_accuracy.png"]})
    report.add("SHAP", "TreeSHAP contributions (log-odds): top features and dependence plots.",
               figures={k: v for k, v in figures.items() if k.startswith(("shap", "dependence"))})
    if config.interaction_model is not None:
        report.add("SHAP interactions", f"{config.interaction_model}: interaction values of "
                   f"{config.interaction_with} with {', '.join(config.interactions)}.",
                   figures={k: v for k, v in figures.items() if k.startswith("interaction")})
    return report


def upstream_metrics(infer_dir: Path, clinical_dir: Path | None) -> tuple[dict, dict[str, dict]]:
    """The metrics ``glaucoma-final`` reports beside its own.

    Parameters
    ----------
    infer_dir
        glaucoma-infer's output directory.
    clinical_dir
        glaucoma-clinical's output directory, or None.

    Returns
    -------
    imaging : dict
        ``imaging_metrics.json`` of glaucoma-infer (empty when absent).
    clinical : dict
        Per model the metrics of glaucoma-clinical (empty when absent).
    """
    imaging = json.loads((infer_dir / "imaging_metrics.json").read_text()) \
        if (infer_dir / "imaging_metrics.json").exists() else {}
    clinical = json.loads((clinical_dir / "metrics.json").read_text())["models"] \
        if clinical_dir is not None and (clinical_dir / "metrics.json").exists() else {}
    return imaging, clinical


def _imaging_section(report: Report, imaging: dict, infer_dir: Path) -> None:
    """Add "Imaging models" (glaucoma-infer's metrics and figures) after "Baseline models" if there is one."""
    rows = []
    for name, key in (("fundus CNN (per photo)", "cfp"), ("OCT ensemble (XGBoost over scans)", "oct_ensemble"),
                      ("OCT + fundus ensemble", "oct_cfp_ensemble")):
        if key in imaging:
            r = imaging[key]
            rows.append({"model": name, "test AUC": r["auc"], "95% CI": _ci_text(r["ci_low"], r["ci_high"], 3),
                         "eyes": r["n"]})
    imaging_figures = {p.name: p.read_bytes() for p in (infer_dir / "scan_auc.png",
                                                        infer_dir / "oct_ensemble" / "shap_by_scan.png")
                       if p.exists()}
    saliency = sorted((infer_dir / "saliency").glob("*.png"))[:2] if (infer_dir / "saliency").exists() else []
    imaging_figures.update({f"saliency_{p.name}": p.read_bytes() for p in saliency})
    after = "Baseline models" if any(s.title == "Baseline models" for s in report.sections) else None
    report.add("Imaging models",
               "CNNs on single OCT B-scans (DenseNet) and fundus photos (transfer learning), trained with Horovod "
               "on Spark; per-retina XGBoost ensembles over the scan probabilities. AUC per scan position, SHAP "
               "per scan, and saliency maps (integrated gradients, SmoothGrad).",
               tables={"imaging test metrics": pd.DataFrame(rows)} if rows else None,
               figures=imaging_figures, after=after)


def final_report(clinical_dir: Path | None, baseline: str, results: dict[str, dict], clinical: dict[str, dict],
                 imaging: dict, figures: dict[str, bytes], infer_dir: Path) -> Report:
    """The report of ``glaucoma-final``: glaucoma-clinical's report with "Imaging models" and "Final model" added.

    Parameters
    ----------
    clinical_dir
        glaucoma-clinical's output, whose ``report.json`` is extended; None: a new report.
    baseline
        The clinical feature list (``BM3``) the image probabilities were added to.
    results
        Per model of the final job its metrics.
    clinical
        Per model of glaucoma-clinical its metrics (rows of the comparison table).
    imaging
        glaucoma-infer's ``imaging_metrics.json``.
    figures
        The final job's figures.
    infer_dir
        glaucoma-infer's output (its scan AUC, SHAP-by-scan and saliency figures are shown).

    Returns
    -------
    Report
        Not yet saved.
    """
    report = Report.load(clinical_dir) if clinical_dir is not None else Report("Glaucoma screening")
    _imaging_section(report, imaging, infer_dir)
    table = pd.DataFrame([{"model": n, "features": len(r["features"]), "test AUC": r["auc"],
                           "95% CI": _ci_text(r["ci_low"], r["ci_high"], 3), "accuracy": r["accuracy"],
                           "PTG accuracy": r["ptg_accuracy"], "n_test": r["n_test"], "rounds": r["rounds"]}
                          for n, r in {**clinical, **results}.items()])
    top = pd.DataFrame(results["final"]["top_features"], columns=["feature", "mean |SHAP|"])
    report.add("Final model",
               f"XGBoost over the image probabilities (OCT scans and fundus photo) and the {baseline} "
               f"features, the paper's hyper-parameters, trained on the eyes that have images; "
               f"{baseline} (same eyes) is the clinical model refitted on exactly those eyes.",
               tables={"test metrics": table, "top features": top}, figures=figures, after="Imaging models")
    return report


def stats_report(config: GlaucomaStatsConfig, tables: dict[str, pd.DataFrame], figures: dict[str, bytes]) -> Report:
    """The report of ``glaucoma-stats``: the ANCOVA table, then Dunn's tests with the distributions.

    Parameters
    ----------
    config
        The job's config (the ANCOVA measures are named).
    tables
        ``ancova`` and ``dunn_<measure>`` tables.
    figures
        The distribution plots.

    Returns
    -------
    Report
        Not yet saved.
    """
    report = Report("Glaucoma screening: group statistics")
    report.add("ANCOVA", f"Age-adjusted group differences of {', '.join(config.ancova)} (Table 3.1).",
               tables={"ANCOVA": tables["ancova"]})
    report.add("Dunn's tests", "Pairwise rank comparisons, Bonferroni-corrected (Tables 3.2-3.6).",
               tables={name: t for name, t in tables.items() if name.startswith("dunn")}, figures=figures)
    return report
