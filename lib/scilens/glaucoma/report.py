"""A one-page HTML report that several jobs add to.

A :class:`Report` is a list of sections (title, text, tables, PNG figures). ``save(dir)``
writes ``report.html`` (figures embedded, one self-contained page) and ``report.json`` (the
sections, figures base64-encoded). Another job loads the JSON and adds its own sections, e.g.
the imaging engineer's final model next to BM1-BM3::

    report = Report.load(clinical_output / "report.json")
    report.add("Final model", text="...", figures={"roc.png": png_bytes}, after="Baseline models")
    report.save(imaging_output)
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["Report", "Section", "markdown_table"]


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
    def plain(v):
        if isinstance(v, float):
            return None if v != v else float(f"{v:.4g}")
        return v.item() if hasattr(v, "item") else v
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub markdown table (floats to 3 significant digits, small p-values in e-notation)."""
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        return str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.astype(object).itertuples(index=False)]
    return "\n".join(lines) + "\n"
