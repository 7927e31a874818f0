"""The page of `pipeline.report`: one self-contained HTML document, a section per given output.

Plain HTML and CSS: no script, no external resource (figures are data URIs), a layout that
fits a laptop screen and prints (figures and cluster cards do not break across pages).
Every value taken from the outputs is escaped. Where a figure or a table comes from a sample
rather than from the stage's own counts, its caption says so in a `.sample` note.
"""
from __future__ import annotations

import difflib
import html
import json
from collections.abc import Iterable

from pipeline.report_plots import Figures

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9dee3; --soft: #f4f6f8; --kept: #3a7d44; --gone: #b23a48; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1120px; padding: 24px 28px 64px; color: var(--ink); line-height: 1.45;
  font: 15px/1.45 "KoforgeHangul", system-ui, -apple-system, "Segoe UI", "Noto Sans KR", "Apple SD Gothic Neo",
  "Malgun Gothic", "NanumGothic", sans-serif; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 40px 0 8px; padding-top: 12px; border-top: 3px solid var(--ink); }
h3 { font-size: 17px; margin: 28px 0 6px; } h4 { font-size: 15px; margin: 18px 0 4px; }
.meta, .note, figcaption { color: var(--muted); font-size: 13px; }
.sample { display: inline-block; background: #fff4d6; color: #7a5b00; border-radius: 3px; padding: 0 5px;
  font-size: 12px; }
nav ol { columns: 2; margin: 8px 0; } nav a { color: var(--ink); }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { background: var(--soft); border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.card b { display: block; font-size: 20px; } .card span { color: var(--muted); font-size: 12px; }
figure { margin: 10px 0; break-inside: avoid; } figure img { max-width: 100%; height: auto; display: block; }
.row { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 8px 24px;
  align-items: start; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
td:first-child:not(.raw) { white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.raw { font-family: "KoforgeHangul", ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 12px;
  word-break: break-all; max-width: 760px; }
.cluster { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; margin: 10px 0; break-inside: avoid; }
.members { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 8px; }
.member { background: var(--soft); border-radius: 4px; padding: 6px 8px; font-size: 14px;
  border-left: 4px solid var(--gone); }
.member.kept { border-left-color: var(--kept); } .member .id { color: var(--muted); font-size: 12px; }
mark { background: #ffe08a; padding: 0 1px; } del { background: #f6d5da; color: #8a2432; }
.warn { color: #8a4b00; }
@media print { body { max-width: none; padding: 0; font-size: 11pt; } section ~ section > h2 { break-before: page; }
  h2, h3, h4 { break-after: avoid; } nav { display: none; } }
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def number(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return esc(value if value is not None else "–")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return esc(value)


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def table(headers: list[str], rows: Iterable[list[object]], numeric: set[int] = frozenset(), raw: set[int] = frozenset()
          ) -> str:
    """An HTML table; columns in `numeric` right-aligned and formatted, in `raw` monospaced (values escaped)."""
    head = "".join(f'<th class="n">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            if i in numeric:
                cells.append(f'<td class="n">{number(value)}</td>')
            else:
                cells.append(f'<td class="raw">{esc(value)}</td>' if i in raw else f"<td>{esc(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cards(items: list[tuple[str, object]]) -> str:
    return '<div class="cards">' + "".join(f'<div class="card"><b>{number(value)}</b><span>{esc(label)}</span></div>'
                                           for label, value in items) + "</div>"


def figure(uri: str, caption: str, alt: str) -> str:
    """An embedded figure; the caption is HTML built by the caller (its values escaped there)."""
    return f'<figure><img src="{uri}" alt="{esc(alt)}"><figcaption>{caption}</figcaption></figure>'


def sample_note(text: str) -> str:
    return f'<span class="sample">sample</span> {esc(text)}'


def page(title: str, meta: str, toc: list[tuple[str, str]], sections: list[str], font_css: str = "") -> str:
    """The whole document; `font_css` is the embedded Hangul @font-face (report_plots.font_face), if any."""
    nav = "".join(f'<li><a href="#{esc(anchor)}">{esc(name)}</a></li>' for anchor, name in toc)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{font_css}\n{CSS}</style></head>\n<body><header><h1>{esc(title)}</h1>"
            f"<p class=\"meta\">{meta}</p><nav><ol>{nav}</ol></nav></header>\n" + "\n".join(sections)
            + "\n</body></html>\n")


def font_note(figures: Figures, embedded: int) -> str:
    """Which font drew the figures and the page's Korean text (or that none was found, and what follows)."""
    font = figures.font
    if font is None:
        return ('<span class="warn">No font with Hangul glyphs was found (tried the koreanize-matplotlib package and '
                "Debian's fonts-nanum): the figures carry English labels only, and Korean text is shown as HTML text "
                "beside them, in your browser's fonts.</span>")
    return (f"Figures use the font {esc(font.name)} from the {esc(font.origin)} ({esc(font.path)})"
            + (f"; the page embeds the same font for its {embedded:,} Korean and other non-ASCII characters that "
               "the font has, so it renders without a Korean font installed." if embedded else "."))


def marked(text: str, reference: str) -> str:
    """`text` escaped, with what differs from `reference` shown: <mark> added or changed, <del> left out."""
    if text == reference:
        return esc(text)
    out = []
    matcher = difflib.SequenceMatcher(None, reference, text, autojunk=False)
    for op, ref_start, ref_end, start, end in matcher.get_opcodes():
        if op == "equal":
            out.append(esc(text[start:end]))
            continue
        if op == "delete":
            out.append(f"<del>{esc(reference[ref_start:ref_end])}</del>")
        if end > start:
            out.append(f"<mark>{esc(text[start:end])}</mark>")
    return "".join(out)


def pretty(value: object) -> str:
    return esc(json.dumps(value, ensure_ascii=False, sort_keys=True))

