"""The documentation's links: every relative Markdown link in README.md, BENCHMARKS.md and
docs/*.md must point to an existing file, and a `#anchor` to a heading of its target file
(GitHub's heading slugs). README.md stays a short front door."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 260

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target), with an optional "title"; the text may hold `code` but no brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s)>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [path for path in files if path.is_file()]


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = INLINE_CODE.sub(lambda m: m.group(2), text)  # code renders without its backticks
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # GitHub keeps letters, digits, '_', '-' and spaces
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = path.read_text(encoding="utf-8")
    for _, line in prose_lines(text):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")  # repeated headings get -1, -2, ...
    return found


def links(path: Path):
    """(line number, target) of every link in prose: inline links and reference definitions."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        without_code = INLINE_CODE.sub(lambda m: "\0" * len(m.group(0)), line)
        for match in INLINE_LINK.finditer(without_code):
            yield number, match.group(1)
        definition = REFERENCE_DEFINITION.match(without_code)
        if definition:
            yield number, definition.group(1)


def broken_links() -> list[str]:
    broken = []
    for source in doc_files():
        for number, target in links(source):
            if not target or EXTERNAL.match(target):
                continue
            where = f"{source.relative_to(ROOT)}:{number}: {target}"
            file_part, _, anchor = target.partition("#")
            destination = (source.parent / unquote(file_part)).resolve() if file_part else source
            if not destination.exists():
                broken.append(f"{where} (no such file)")
                continue
            if anchor and destination.suffix == ".md" and unquote(anchor) not in anchors(destination):
                broken.append(f"{where} (no heading #{anchor} in {destination.relative_to(ROOT)})")
    return broken


def test_slug_follows_github_rules():
    assert slug("`python -m pipeline.run`: clean, filter and deduplicate") == "python--m-pipelinerun-clean-filter-and-deduplicate"
    assert slug("Why n = 2") == "why-n--2"
    assert slug("Report fields (`tokenizer_report.json`)") == "report-fields-tokenizer_reportjson"
    assert slug("Clean corpus (`koforge-clean-corpus/1`)") == "clean-corpus-koforge-clean-corpus1"
    assert slug("Sizing: measured throughput, and estimates for 10 GB and 70 GB") == (
        "sizing-measured-throughput-and-estimates-for-10-gb-and-70-gb")


def test_every_relative_link_resolves():
    broken = broken_links()
    assert not broken, "broken documentation links:\n" + "\n".join(broken)


def test_docs_pages_exist():
    for name in ("run", "tokenize", "shard", "distill", "formats", "near-dedup", "scale", "cli", "architecture"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), f"docs/{name}.md is missing"


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it <= {README_MAX_LINES}"
