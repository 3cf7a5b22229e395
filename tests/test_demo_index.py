"""The demo index page (scilens.demos.index) on a small output tree of real files."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from scilens.demos.index import write_index


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href") and not values["href"].startswith("#"):
            self.hrefs.append(values["href"])
        if tag == "img":
            self.images.append(values["src"])
        self._in_h2 = tag == "h2"

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_h2 = False


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_index_links_every_job_relative_and_existing(tmp_path: Path) -> None:
    root = tmp_path / "demo output"
    astro_report = _touch(root / "astro" / "output" / "report" / "index.html")
    _touch(root / "astro" / "output" / "report" / "coadd.png")
    _touch(root / "astro" / "survey" / "images" / "top.png")
    outside = _touch(tmp_path / "outside.png")
    neuro_report = _touch(root / "neuro" / "output" / "report.html")
    neuro_png = _touch(root / "neuro" / "output" / "subjects" / "subject=a" / "report.png")
    _touch(root / "neuro" / "output" / "subjects" / "subject=a" / "deeper" / "other.png")
    odd = "a<b>&c"
    _touch(root / odd / "output" / "table.parquet")
    shown = {
        "astro": [(astro_report, "co-add"), (root / "astro" / "survey", "the survey: images/, truth.parquet")],
        "neuro": [(neuro_report, "subjects"), (neuro_png, "mean b0"), (root / "neuro" / "missing.png", "gone")],
        odd: [(outside, "not under the job's directory")],
    }

    index = write_index(root, shown)

    assert index == root / "index.html"
    page = index.read_text()
    links = _Links()
    links.feed(page)
    assert links.headings == ["astro", "neuro", odd]
    assert "<h2>a&lt;b&gt;&amp;c</h2>" in page and f"<h2>{odd}</h2>" not in page
    for target in links.hrefs + links.images:
        assert not target.startswith(("/", "file:", "http")), target
        assert (root / unquote(target)).exists(), target
    resolved = {(root / unquote(t)).resolve() for t in links.hrefs}
    assert {astro_report, neuro_report, root / "astro", root / "neuro", root / odd} <= resolved
    # A named figure wins; astro's is the one beside its report; the outside one is not linked.
    assert [(root / unquote(s)).resolve() for s in links.images] == [
        root / "astro" / "output" / "report" / "coadd.png", neuro_png]
    assert not any(name in t for t in links.hrefs + links.images for name in ("missing.png", "outside.png"))
    # Every item is listed with what it is; a missing one says so.
    assert "mean b0" in page and "missing.png (missing): gone" in page and "not under the job&#x27;s" in page
