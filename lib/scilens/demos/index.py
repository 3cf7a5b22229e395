"""``<output>/index.html``: the one page to open after ``make demo``.

Per job it links the HTML report, shows the key figure and lists what the demo wrote, each a link
with what it is, all by paths relative to the page so the directory can be copied or served as it
is. A demo returns what it wants shown as :data:`Shown` pairs, the report and key figure among the
first; a job without them in its list gets the shallowest report and figure found on disk.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

INDEX_NAME = "index.html"

Shown = tuple[Path, str]
"""One thing a demo wrote, for the user: its path and what it is."""


def as_text(shown: Sequence[Shown]) -> str:
    """The demo's list as aligned text lines, ``path  what``, for the terminal.

    Parameters
    ----------
    shown
        What the demo wrote, in the order to show it.

    Returns
    -------
    str
        One line per item.
    """
    if not shown:
        return ""
    width = max(len(str(path)) for path, _ in shown)
    return "\n".join(f"{path!s:<{width}}  {what}" for path, what in shown)


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


def _pick(shown: list[Path], job_dir: Path, suffix: str, skip: Path | None,
          near: Path | None = None) -> Path | None:
    for path in shown:
        if path.is_file() and path.suffix == suffix and path != skip:
            return path
    # Then beside the report (its pictures), the directories the demo showed, the whole job.
    places = ([near.parent] if near is not None else []) + [p for p in shown if p.is_dir()] + [job_dir]
    return _shallowest(places, f"*{suffix}", skip)


def _href(path: Path, base: Path) -> str:
    return quote(Path(os.path.relpath(path, base)).as_posix() + ("/" if path.is_dir() else ""))


def _item(path: Path, what: str, root: Path) -> str:
    label = html.escape(path.name + ("/" if path.is_dir() else ""))
    where = f'<a href="{_href(path, root)}">{label}</a>' if path.exists() else f"{label} (missing)"
    return f"<li>{where}: {html.escape(what)}</li>"


def write_index(root: Path, shown: Mapping[str, Sequence[Shown]]) -> Path:
    """Write ``root/index.html`` linking every job's report, key figure and outputs.

    Parameters
    ----------
    root
        The demo output directory; job ``name``'s outputs are under ``root/name``.
    shown
        Job name -> what its demo wrote (path, what it is), in the order to list the jobs; an
        empty list for a job run earlier leaves the links to what is on disk. Paths outside the
        job's directory are listed as text, never linked.

    Returns
    -------
    Path
        The page written.
    """
    root = Path(root).absolute()
    index = root / INDEX_NAME
    rows = []
    for job, items in shown.items():
        job_dir = root / job
        inside = [(Path(p).absolute(), what) for p, what in items]
        paths = [p for p, _ in inside if p.is_relative_to(job_dir) and p.exists()]
        report = _pick(paths, job_dir, ".html", skip=index)
        figure = _pick(paths, job_dir, ".png", skip=None, near=report)
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
        if inside:
            parts.append("<ul>" + "".join(
                _item(p, what, root) if p.is_relative_to(job_dir) else
                f"<li>{html.escape(str(p))}: {html.escape(what)}</li>" for p, what in inside) + "</ul>")
        parts.append("</section>")
        rows.append("\n".join(parts))
    toc = "".join(f'<li><a href="#{html.escape(quote(job))}">{html.escape(job)}</a></li>' for job in shown)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>scilens demo</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:auto}}img{{max-width:100%;max-height:28em}}
li{{margin:.2em 0}}</style></head>
<body><h1>scilens demo</h1><p>Every job's report, key figure and outputs.</p><ul>{toc}</ul>
{chr(10).join(rows)}
</body></html>
"""
    index.write_text(page, encoding="utf-8")
    return index
