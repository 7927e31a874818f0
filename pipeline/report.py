"""`python -m pipeline.report`: one self-contained HTML page, with plots, for any mix of stage outputs.

    python -m pipeline.report demo_output/corpus demo_output/tokenizer demo_output/shards \\
        --output demo_output/report.html
    python -m pipeline.report out/corpus runs/minilm23m runs/minilm23m/eval.json --output report.html

Each path is detected by its completion marker and files (pipeline/report_data.py): a
pipeline.run output, a tokenizer directory, a shard directory, a distill.train output or a
distill.evaluate JSON report. The command parses (the convention of pipeline/cli.py),
detects every path before any work (one that is none of them: exit 2, saying what was
expected), collects each output's data (bounded reads, samples said as such), draws the
figures (pipeline/report_plots.py: matplotlib, imported only after parsing), builds the page
(pipeline/report_sections.py, pipeline/report_html.py) and writes it atomically through
transforms.storage. docs/report.md describes the page.
"""
from __future__ import annotations

import time

from pipeline import cli

COMMAND = "pipeline.report"
DEFAULT_TITLE = "koforge report"
FONT_FAMILY = "KoforgeHangul"  # the embedded font's name in the page's CSS (pipeline/report_html.py)
SECTION_TITLES = {"corpus": "Corpus", "tokenizer": "Tokenizer", "shards": "Token shards", "distill": "Distillation",
                  "evaluation": "Evaluation"}


def build_parser() -> cli.ArgumentParser:
    from pipeline.report_data import Limits  # light: transforms.storage (pyarrow.fs), no matplotlib

    defaults = Limits()
    parser = cli.ArgumentParser(COMMAND, "Write one self-contained HTML page (figures embedded, no network, no "
                                         "script) about any mix of pipeline.run, pipeline.tokenize, pipeline.shard, "
                                         "distill.train outputs and distill.evaluate reports.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="output directories (or distill.evaluate .json reports), local, gs:// or s3://")
    parser.add_argument("--output", required=True, metavar="FILE", help="the HTML file to write")
    parser.add_argument("--title", default=DEFAULT_TITLE, help="the page's title")
    parser.add_argument("--date-field", default=None, metavar="FIELD",
                        help="kept field holding each record's date, for records per month (default: the first kept "
                             "field named like a date, e.g. date)")
    parser.add_argument("--sample-lines", type=cli.positive_int, default=defaults.sample_lines, metavar="N",
                        help="raw input lines profiled for what the clean changed and lengths before the filter "
                             "(used when stats.json has no profile), and corpus texts for the tokenizer's split words")
    parser.add_argument("--scan-lines", type=cli.positive_int, default=defaults.scan_lines, metavar="N",
                        help="raw input lines searched for the texts of the largest near-duplicate clusters")
    parser.add_argument("--examples", type=cli.positive_int, default=defaults.examples, metavar="N",
                        help="example lines shown per drop reason")
    parser.add_argument("--clusters", type=cli.positive_int, default=defaults.clusters, metavar="N",
                        help="largest near-duplicate clusters shown")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    cli.add_reporting_options(parser)
    return parser


def detect_all(paths: list[str]) -> list[tuple[str, str]]:
    """(kind, path) of every path, in the page's order (by kind, then as given); a UsageError for the first unknown."""
    from pipeline.report_data import KINDS, ReportInputError, detect

    found = []
    for path in paths:
        try:
            found.append((detect(path), path))
        except (ReportInputError, OSError) as error:
            raise cli.UsageError(str(error)) from None
    return sorted(found, key=lambda pair: KINDS.index(pair[0]))


def check_output(output: str, overwrite: bool) -> None:
    from transforms import storage

    if storage.is_dir(output):
        raise cli.UsageError(f"--output {output} is a directory; give the HTML file to write")
    if storage.exists(output) and not overwrite:
        raise cli.UsageError(f"--output {output} already exists; pass --overwrite to replace it")


def collect(found: list[tuple[str, str]], args, progress: cli.Progress) -> list[tuple[str, str, dict]]:
    """(kind, path, data) for each output; a file that cannot be read as its kind is a UsageError naming it."""
    from pipeline import report_data as data

    limits = data.Limits(sample_lines=args.sample_lines, scan_lines=args.scan_lines, examples=args.examples,
                         clusters=args.clusters)
    corpora = [path for kind, path in found if kind == data.CORPUS]
    collected = []
    for kind, path in found:
        progress.say(f"reading {path} ({kind})")
        try:
            if kind == data.CORPUS:
                item = data.collect_corpus(path, limits, args.date_field, progress)
            elif kind == data.TOKENIZER:
                item = data.collect_tokenizer(path, limits, corpora)
            elif kind == data.SHARDS:
                item = data.collect_shards(path)
            elif kind == data.DISTILL:
                item = data.collect_distill(path)
            else:
                item = data.collect_evaluation(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise cli.UsageError(f"{path}: cannot read it as a {kind} output: "
                                 f"{type(error).__name__}: {error}") from None
        collected.append((kind, path, item))
    return collected


def render(collected: list[tuple[str, str, dict]], figures, title: str, started: str) -> str:
    """The page: a header (inputs, font), a table of contents, one section per output (evaluations together)."""
    from pipeline import report_html as html
    from pipeline import report_sections as sections
    from pipeline.report_plots import font_face

    builders = {"corpus": sections.corpus_section, "tokenizer": sections.tokenizer_section,
                "shards": sections.shards_section, "distill": sections.distill_section}
    toc, parts = [], []
    for number, (kind, path, item) in enumerate(collected, 1):
        if kind in builders:
            anchor = f"{kind}-{number}"
            toc.append((anchor, f"{SECTION_TITLES[kind]}: {path}"))
            parts.append(builders[kind](item, figures, anchor))
    evaluations = [item for kind, _, item in collected if kind == "evaluation"]
    if evaluations:
        toc.append(("evaluation", "Evaluation"))
        parts.append(sections.evaluation_section(evaluations, "evaluation"))
    inputs = ", ".join(f"{html.esc(path)} ({kind})" for kind, path, _ in collected)
    meta = f"Written {html.esc(started)} by python -m pipeline.report from {inputs}. "
    font_css, embedded = font_face(figures.font, title + meta + "".join(parts), FONT_FAMILY)
    return html.page(title, meta + html.font_note(figures, embedded), toc, parts, font_css)


def report(args) -> dict:
    """The command's work: detect, collect, draw, write; returns the machine-readable summary."""
    from pipeline.report_plots import Figures, find_hangul_font
    from transforms import storage

    progress = cli.Progress(COMMAND, enabled=not args.quiet)
    check_output(args.output, args.overwrite)
    found = detect_all(args.paths)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    collected = collect(found, args, progress)
    font = find_hangul_font()
    progress.say("drawing the figures" + ("" if font else " (no Hangul font: Korean stays out of the figures)"))
    page = render(collected, Figures(font), args.title, started).encode("utf-8")
    storage.write_bytes_atomic(args.output, page)
    summary = {"output": storage.absolute(args.output), "bytes": len(page),
               "sections": [{"kind": kind, "path": path} for kind, path, _ in collected],
               "font": None if font is None else {"name": font.name, "path": font.path, "origin": font.origin}}
    human = (f"wrote {summary['output']} ({len(page) / 1024:,.0f} KiB): "
             + ", ".join(f"{kind} {path}" for kind, path, _ in collected)
             + f"; figures font: {font.name if font else 'none with Hangul (Korean as HTML text)'}")
    cli.emit_summary(args, human, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_command(COMMAND, lambda: report(args))


if __name__ == "__main__":
    raise SystemExit(main())
