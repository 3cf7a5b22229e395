"""``<output>/index.html``: the one page to open after ``make demo``.

Per job it links the HTML report, shows the key figure and links the output directory, all by
paths relative to the page so the directory can be copied or served as it is. What to link comes
from the lines the demo returned (the paths it named, first) and then from what is on disk.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

INDEX_NAME = "index.html"

# A path starts a word: "images/," inside a note is not one.
_PATH = re.compile(r"(?<!\S)(/\S+)")


def _named_paths(text: str, job_dir: Path) -> list[Path]:
    """Paths under ``job_dir`` a demo named in its summary, in order, that exist."""
    found = []
    for token in _PATH.findall(text):
        path = Path(token.rstrip(":,;)") or "/")
        if path.is_relative_to(job_dir) and path.exists() and path not in found:
            found.append(path)
    return found


def _shallowest(dirs: Iterable[Path], pattern: str, skip: Path | None = None) -> Path | None:
    # Shallowest first: a job's summary figure or report sits above its per-record pictures.
    for directory in dirs:
        if not directory.is_dir():
            continue
        hits = sorted((p for p in directory.rglob(pattern) if p.is_file() and p != skip),
                      key=lambda p: (len(p.relative_to(directory).parts), str(p)))
        if hits:
            return hits[0]
    return None


def _pick(named: list[Path], job_dir: Path, suffix: str, skip: Path | None,
          near: Path | None = None) -> Path | None:
    for path in named:
        if path.is_file() and path.suffix == suffix and path != skip:
            return path
    # Then beside the report (its pictures), the directories the demo named, the whole job.
    places = ([near.parent] if near is not None else []) + [p for p in named if p.is_dir()] + [job_dir]
    return _shallowest(places, f"*{suffix}", skip)


def _href(path: Path, base: Path) -> str:
    return quote(Path(os.path.relpath(path, base)).as_posix() + ("/" if path.is_dir() else ""))


def write_index(root: Path, summaries: Mapping[str, str]) -> Path:
    """Write ``root/index.html`` linking every job's report, key figure and output directory.

    Parameters
    ----------
    root
        The demo output directory; job ``name``'s outputs are under ``root/name``.
    summaries
        Job name -> the text its demo returned (absolute paths, one per line, with notes), in
        the order to list them; an empty text for a job run earlier leaves the links to what is
        on disk.

    Returns
    -------
    Path
        The page written.
    """
    root = Path(root).absolute()
    index = root / INDEX_NAME
    rows = []
    for job, text in summaries.items():
        job_dir = root / job
        named = _named_paths(text, job_dir)
        report = _pick(named, job_dir, ".html", skip=index)
        figure = _pick(named, job_dir, ".png", skip=None, near=report)
        name = html.escape(job)
        links = []
        if report is not None:
            links.append(f'<a href="{_href(report, root)}">report</a>')
        if job_dir.is_dir():
            links.append(f'<a href="{_href(job_dir, root)}">outputs</a>')
        parts = [f'<section id="{html.escape(quote(job))}">', f"<h2>{name}</h2>",
                 f"<p>{' &middot; '.join(links) or 'no outputs found'}</p>"]
        if figure is not None:
            parts.append(f'<a href="{_href(figure, root)}"><img src="{_href(figure, root)}" '
                         f'alt="{name}: {html.escape(figure.name)}"></a>')
        if text.strip():
            parts.append(f"<pre>{html.escape(text)}</pre>")
        parts.append("</section>")
        rows.append("\n".join(parts))
    toc = "".join(f'<li><a href="#{html.escape(quote(job))}">{html.escape(job)}</a></li>' for job in summaries)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>scilens demo</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:auto}}img{{max-width:100%;max-height:28em}}
pre{{background:#f4f4f4;padding:.5em;overflow-x:auto}}</style></head>
<body><h1>scilens demo</h1><p>Every job's report, key figure and outputs.</p><ul>{toc}</ul>
{chr(10).join(rows)}
</body></html>
"""
    index.write_text(page, encoding="utf-8")
    return index
