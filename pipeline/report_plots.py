"""The figures of `pipeline.report`: matplotlib without pyplot (Agg, no display, no global figure state),
one small style, SVG with text drawn as paths, embedded in the page as data URIs.

Hangul: matplotlib's bundled DejaVu Sans has no Hangul glyphs, so Korean would come out as
empty boxes. The NanumGothic file that the PyPI package `koreanize-matplotlib` ships is loaded
directly with font_manager (importing that package would change matplotlib's global settings,
and it imports distutils, which Python 3.12 no longer has), then Debian's fonts-nanum. A font
counts only if its character map holds Hangul syllables. Without one, no figure gets Korean
text: labels stay English, and the Korean words of a figure (the split words) are in an HTML
table beside it, which the browser renders with its own fonts. Because SVG text is drawn as
paths, the page needs no font to show the figures.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

DEBIAN_NANUM = "/usr/share/fonts/truetype/nanum/NanumGothic.ttf"
PALETTE = ("#2f6690", "#d9822b", "#3a7d44", "#8e5ea2", "#b23a48", "#6c757d")
DROPPED_COLOR = "#e4a0a8"
FIGURE_SIZE = (8.6, 3.2)  # inches, shown at their own size (96 px an inch): ~830 px of the page's ~1060
HANGUL_PROBE = "가"
HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]+")
RULE_LABELS = {"nfc": "NFC normalised", "disallowed_characters": "disallowed chars -> space",
               "urls": "URLs removed", "repeats": "repeats shortened", "whitespace": "spacing collapsed",
               "changed": "any change"}


@dataclass(frozen=True)
class HangulFont:
    """A font file with Hangul glyphs, its family name and where it came from (said on the page)."""

    name: str
    path: str
    origin: str


def font_candidates() -> list[tuple[str, str]]:
    """(font file, origin) to try in order: the koreanize-matplotlib package's NanumGothic, then Debian's."""
    candidates = []
    spec = importlib.util.find_spec("koreanize_matplotlib")  # finds the package without running its import
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidates.append((os.path.join(location, "fonts", "NanumGothic.ttf"), "PyPI package koreanize-matplotlib"))
    candidates.append((DEBIAN_NANUM, "Debian package fonts-nanum"))
    return candidates


def covers_hangul(path: str) -> bool:
    from matplotlib.ft2font import FT2Font

    try:
        return ord(HANGUL_PROBE) in FT2Font(path).get_charmap()
    except (OSError, RuntimeError, ValueError):
        return False


def find_hangul_font() -> HangulFont | None:
    """The first candidate font file that exists and has Hangul, registered with matplotlib; None if none."""
    from matplotlib import font_manager

    for path, origin in font_candidates():
        if os.path.isfile(path) and covers_hangul(path):
            font_manager.fontManager.addfont(path)
            return HangulFont(font_manager.FontProperties(fname=path).get_name(), path, origin)
    return None


def style(font: HangulFont | None) -> dict:
    """The one style of every figure (matplotlib rcParams), deterministic SVG output."""
    from cycler import cycler

    return {
        "font.family": [font.name, "DejaVu Sans"] if font else ["DejaVu Sans"],
        "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
        "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.unicode_minus": False,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "axes.grid.axis": "y",
        "grid.color": "#dddddd", "grid.linewidth": 0.6, "axes.axisbelow": True,
        "axes.prop_cycle": cycler(color=PALETTE), "svg.fonttype": "path", "svg.hashsalt": "koforge-report",
        "figure.dpi": 96,
    }


def bucket_label(edges: list[int], index: int) -> str:
    """'10-19' for the bucket [10, 20); the last bucket is '1000000+'."""
    low = edges[index]
    if index + 1 >= len(edges):
        return f"{low:,}+"
    high = edges[index + 1] - 1
    return f"{low:,}" if high == low else f"{low:,}-{high:,}"


def keep_hangul_out(figure) -> None:
    """Without a Hangul font, a Hangul run that reached a figure anyway becomes '?', never an empty box."""
    from matplotlib.text import Text

    for text in figure.findobj(Text):
        if HANGUL.search(text.get_text()):
            text.set_text(HANGUL.sub("?", text.get_text()))


def log_y(axes) -> None:
    """A log y axis labelled 0.1, 1, 10 in plain text: matplotlib's 10^-1 labels are mathtext, whose minus sign
    (U+2212) the Hangul font lacks, and mathtext has no per-glyph fallback."""
    from matplotlib import ticker

    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(ticker.FuncFormatter(
        lambda value, _: f"{value:g}" if f"{value:e}"[0] in "25" else ""))


def pad_bars(axes, first: int, last: int, slots: int = 8) -> None:
    """Keep a few bars from spreading over the whole width: at least `slots` bar widths on the x axis."""
    extra = max(0.0, (slots - (last - first + 1)) / 2)
    axes.set_xlim(first - 0.5 - extra, last + 0.5 + extra)


class Figures:
    """Draws each figure of the report into an SVG data URI, in one style, with or without a Hangul font."""

    def __init__(self, font: HangulFont | None):
        self.font = font
        self.rc = style(font)

    def label(self, english: str, korean: str | None = None) -> str:
        """An axis label: English, with its Korean beside it only when a Hangul font is loaded."""
        return f"{english} · {korean}" if korean and self.font else english

    def render(self, draw: Callable, size: tuple[float, float] = FIGURE_SIZE) -> str:
        """Run `draw(figure)` and return the figure as an SVG data URI."""
        import matplotlib
        from matplotlib.figure import Figure

        with matplotlib.rc_context(self.rc):
            figure = Figure(figsize=size, layout="constrained")
            draw(figure)
            if self.font is None:
                keep_hangul_out(figure)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="svg", metadata={"Date": None})
        return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    # ------------------------------------------------------------ corpus

    def flow(self, flow: list[dict]) -> str:
        """Horizontal bars, one per step of pipeline.run: what went on (dark) and what the step dropped (light)."""
        total = max(flow[0]["records"], 1)

        def draw(figure):
            axes = figure.subplots()
            steps = [row["step"] for row in flow][::-1]
            entering = [flow[max(i - 1, 0)]["records"] for i in range(len(flow))][::-1]
            after = [row["records"] for row in flow][::-1]
            axes.barh(steps, after, color=PALETTE[0], label="records going on")
            axes.barh(steps, [e - a for e, a in zip(entering, after)], left=after, color=DROPPED_COLOR,
                      label="dropped at this step")
            for y, (count, came) in enumerate(zip(after, entering)):
                dropped = came - count
                note = f"{count:,}" + (f"   -{dropped:,} ({dropped / total:.1%} of input)" if dropped else "")
                axes.text(came + total * 0.01, y, note, va="center", fontsize=9)
            axes.set_xlim(0, total * 1.45)
            axes.set_xlabel(self.label("records", "레코드 수"))
            axes.grid(axis="x")
            axes.grid(axis="y", visible=False)
            axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        return self.render(draw, (FIGURE_SIZE[0], 3.0))

    def length_histogram(self, series: list[tuple[str, dict]]) -> str:
        """Grouped bars: share of texts per log-spaced length bucket, one colour per series (label, {edge: n})."""
        from transforms.profile import LENGTH_EDGES

        edges = list(LENGTH_EDGES)
        used = sorted({edges.index(int(edge)) for _, histogram in series for edge, n in histogram.items() if n})
        span = list(range(used[0], used[-1] + 1)) if used else [0]

        def draw(figure):
            axes = figure.subplots()
            width = 0.8 / max(len(series), 1)
            for number, (name, histogram) in enumerate(series):
                counts = {edges.index(int(edge)): n for edge, n in histogram.items()}
                total = max(sum(counts.values()), 1)
                shares = [100 * counts.get(index, 0) / total for index in span]
                axes.bar([i + (number - (len(series) - 1) / 2) * width for i in range(len(span))], shares, width,
                         label=f"{name} (n={total:,})", color=PALETTE[number % len(PALETTE)])
            axes.set_xticks(range(len(span)), [bucket_label(edges, index) for index in span])
            axes.set_xlabel(self.label("text length in characters", "글자 수"))
            axes.set_ylabel(self.label("share of texts (%)", "비율"))
            axes.legend(frameon=False)
        return self.render(draw)

    def months(self, months: dict[str, int]) -> str:
        """Records per month (per year when there are more than 36 months); undated records in grey."""
        dated = {key: n for key, n in months.items() if key != "unknown"}
        if len(dated) > 36:
            years: dict[str, int] = {}
            for key, n in dated.items():
                years[key[:4]] = years.get(key[:4], 0) + n
            dated, unit = years, "year"
        else:
            unit = "month"
        keys = sorted(dated) + (["unknown"] if months.get("unknown") else [])

        def draw(figure):
            axes = figure.subplots()
            colors = [PALETTE[5] if key == "unknown" else PALETTE[0] for key in keys]
            axes.bar(range(len(keys)), [months[key] if key == "unknown" else dated[key] for key in keys],
                     color=colors)
            step = max(1, len(keys) // 18)
            axes.set_xticks(range(0, len(keys), step), keys[::step], rotation=45, ha="right")
            axes.set_ylabel(self.label(f"records per {unit}", "레코드 수"))
        return self.render(draw)

    def cluster_sizes(self, histogram: dict[int, int]) -> str:
        """Clusters per size (members, the kept one included); sizes bucketed when there are many."""
        from transforms.profile import LENGTH_EDGES, length_bucket

        sizes = sorted(histogram)
        if len(sizes) > 25:
            bucketed: dict[int, int] = {}
            for size, n in histogram.items():
                bucketed[length_bucket(size)] = bucketed.get(length_bucket(size), 0) + n
            edges = list(LENGTH_EDGES)
            keys = sorted(bucketed)
            labels, values = [bucket_label(edges, edges.index(key)) for key in keys], [bucketed[k] for k in keys]
        else:
            labels, values = [str(size) for size in sizes], [histogram[size] for size in sizes]

        def draw(figure):
            axes = figure.subplots()
            axes.bar(range(len(labels)), values, color=PALETTE[1], width=0.7)
            axes.set_xticks(range(len(labels)), labels)
            pad_bars(axes, 0, len(labels) - 1)
            if values and max(values) > 50 * max(min(values), 1):
                log_y(axes)
            axes.set_xlabel(self.label("cluster size (texts)", "클러스터 크기"))
            axes.set_ylabel(self.label("clusters", "클러스터 수"))
        return self.render(draw, (FIGURE_SIZE[0] * 0.75, 2.6))

    def clean_changes(self, changes: dict) -> str:
        """Share of texts each rule of the clean changed (and any change at all)."""
        rules = [rule for rule in RULE_LABELS if rule in changes and (rule != "nfc" or changes[rule])]
        total = max(changes.get("texts", 0), 1)

        def draw(figure):
            axes = figure.subplots()
            shares = [100 * changes.get(rule, 0) / total for rule in rules][::-1]
            axes.barh([RULE_LABELS[rule] for rule in rules][::-1], shares,
                      color=[PALETTE[2] if rule != "changed" else PALETTE[0] for rule in rules][::-1])
            for y, share in enumerate(shares):
                axes.text(share + 1, y, f"{share:.1f}%", va="center", fontsize=9)
            axes.set_xlim(0, 110)
            axes.set_xlabel(self.label("share of texts changed (%)", "바뀐 비율"))
            axes.grid(axis="x")
            axes.grid(axis="y", visible=False)
        return self.render(draw, (5.2, 2.4))

    # ------------------------------------------------------------ tokenizer and shards

    def token_lengths(self, lengths: dict[int, int]) -> str:
        """Vocabulary entries per length in characters (without ##)."""
        def draw(figure):
            axes = figure.subplots()
            keys = sorted(lengths)
            axes.bar(keys, [lengths[key] for key in keys], color=PALETTE[3], width=0.7)
            axes.set_xticks(keys)
            if keys:
                pad_bars(axes, keys[0], keys[-1])
            axes.set_xlabel(self.label("entry length in characters (## not counted)", "토큰 길이"))
            axes.set_ylabel(self.label("vocabulary entries", "어휘 수"))
        return self.render(draw, (FIGURE_SIZE[0] * 0.75, 2.5))

    def split_words(self, rows: list[dict]) -> str:
        """The most frequent words cut into many pieces: occurrences, the word and its pieces as labels.

        Without a Hangul font the bars are numbered (#1, #2, ...) and the page's table names them.
        """
        def draw(figure):
            axes = figure.subplots()
            y = list(range(len(rows)))[::-1]
            axes.barh(y, [row["count"] for row in rows], color=PALETTE[3])
            labels = [row["word"] if self.font else f"#{rank}" for rank, row in enumerate(rows, 1)]
            axes.set_yticks(y, labels)
            peak = max((row["count"] for row in rows), default=1)
            for position, row in zip(y, rows):
                pieces = " + ".join(row["pieces"]) if self.font else f"{len(row['pieces'])} pieces"
                axes.text(row["count"] + peak * 0.01, position, pieces, va="center", fontsize=8)
            axes.set_xlim(0, peak * 1.6)
            axes.set_xlabel(self.label("occurrences in the sample", "빈도"))
            axes.grid(axis="x")
            axes.grid(axis="y", visible=False)
        return self.render(draw, (FIGURE_SIZE[0], 0.7 + 0.24 * max(len(rows), 3)))

    def shard_fill(self, fill: list[int], seq_len: int) -> str:
        """Sequences by their non-[PAD] ids: how full the packing leaves each row."""
        import numpy as np

        bins = min(32, seq_len)
        edges = np.linspace(0, seq_len + 1, bins + 1)

        def draw(figure):
            axes = figure.subplots()
            axes.hist(np.arange(len(fill)), bins=edges, weights=fill, color=PALETTE[0])
            axes.set_xlabel(self.label(f"non-[PAD] ids per sequence (of {seq_len})", "채워진 토큰"))
            axes.set_ylabel(self.label("sequences", "시퀀스 수"))
        return self.render(draw, (FIGURE_SIZE[0] / 2, 2.5))

    def documents_per_sequence(self, documents: dict[int, int]) -> str:
        """Sequences by the number of documents packed into them ([CLS] ids)."""
        def draw(figure):
            axes = figure.subplots()
            keys = sorted(int(key) for key in documents)
            axes.bar(keys, [documents[key] for key in keys], color=PALETTE[1], width=0.7)
            axes.set_xticks(keys if len(keys) <= 20 else keys[:: len(keys) // 10])
            if keys:
                pad_bars(axes, keys[0], keys[-1], slots=6)
            axes.set_xlabel(self.label("documents per sequence", "문서 수"))
            axes.set_ylabel(self.label("sequences", "시퀀스 수"))
        return self.render(draw, (FIGURE_SIZE[0] / 2, 2.5))

    # ------------------------------------------------------------ distillation

    def losses(self, metrics: list[dict], terms: list[str]) -> str:
        """The total loss and each term over steps (log scale when they span more than a decade)."""
        def draw(figure):
            axes = figure.subplots()
            steps = [row["step"] for row in metrics]
            values = []
            for number, key in enumerate(["loss", *terms]):
                series = [row.get(key) for row in metrics]
                values += [value for value in series if isinstance(value, (int, float)) and value > 0]
                axes.plot(steps, series, label=key, linewidth=2.0 if key == "loss" else 1.2,
                          color=PALETTE[number % len(PALETTE)])
            if values and max(values) > 10 * min(values):
                log_y(axes)
            axes.set_xlabel(self.label("step", "스텝"))
            axes.set_ylabel(self.label("loss", "손실"))
            axes.legend(frameon=False, fontsize=8)
        return self.render(draw)

    def series(self, metrics: list[dict], key: str, label: str, color: str) -> str:
        """One metrics.jsonl field (lr, tokens_per_s) over steps."""
        def draw(figure):
            axes = figure.subplots()
            axes.plot([row["step"] for row in metrics], [row.get(key) for row in metrics], color=color)
            axes.set_xlabel(self.label("step", "스텝"))
            axes.set_ylabel(label)
            axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 5))
        return self.render(draw, (FIGURE_SIZE[0] / 2, 2.4))


def font_face(font: HangulFont | None, text: str, family: str) -> tuple[str, int]:
    """A CSS @font-face with the font, cut down to the non-ASCII characters of `text` it has, as a data URI.

    So the page's Korean text renders where the reader has no Korean font (a fresh Linux
    machine), without network; `unicode-range` limits the font to exactly those characters,
    so every other character keeps the reader's own fonts. Returns ("", 0) without a font or
    when the font has none of them; else (the rule, characters embedded). fontTools comes with
    matplotlib.
    """
    if font is None:
        return "", 0
    from fontTools import subset

    options = subset.Options()
    options.flavor = "woff"  # zlib-compressed; woff2 would need brotli
    options.layout_features = []
    options.drop_tables += ["TSI0", "TSI1", "TSI2", "TSI3", "TSI5", "DSIG"]  # hinting sources fontTools cannot cut
    loaded = subset.load_font(font.path, options)
    wanted = {ord(char) for char in text if ord(char) > 0x7F} & set(loaded.getBestCmap())
    if not wanted:
        loaded.close()
        return "", 0
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(wanted))
    subsetter.subset(loaded)
    buffer = io.BytesIO()
    subset.save_font(loaded, buffer, options)
    loaded.close()
    ranges, points = [], sorted(wanted)
    start = previous = points[0]
    for point in points[1:] + [None]:
        if point is not None and point == previous + 1:
            previous = point
            continue
        ranges.append(f"U+{start:X}" if start == previous else f"U+{start:X}-{previous:X}")
        if point is not None:
            start = previous = point
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    rule = (f'@font-face {{ font-family: "{family}"; src: url(data:font/woff;base64,{data}) format("woff"); '
            f'unicode-range: {", ".join(ranges)}; }}')
    return rule, len(wanted)
