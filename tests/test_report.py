"""`python -m pipeline.report` (issue 19): the page for demo-like outputs built here, its counts, its images,
the no-font fallback and the error cases."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest

pytest.importorskip("matplotlib")

from pipeline import report, report_plots, shard, tokenize  # noqa: E402
from pipeline.report_data import corpus_flow  # noqa: E402
from pipeline.run import run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGE = re.compile(r'<img src="data:image/(svg\+xml|png);base64,([A-Za-z0-9+/=]+)"')
HANGUL = re.compile("[\uac00-\ud7a3]")


class Page(HTMLParser):
    """The page's tables (rows of cell texts), h4 headings, cards, ids and visible text."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.headings, self.cards, self.ids, self.text = [], [], {}, set(), []
        self._cell = self._heading = self._card = None
        self._row: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h4":
            self._heading = []
        elif tag == "div" and attrs.get("class") == "card":
            self._card = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self.tables[-1].append(self._row)
        elif tag == "h4":
            self.headings.append("".join(self._heading))
            self._heading = None
        elif tag == "div" and self._card is not None:
            value, _, label = "\0".join(self._card).partition("\0")
            self.cards.setdefault(label.strip(), []).append(value.strip())
            self._card = None

    def handle_data(self, data):
        self.text.append(data)
        for part in (self._cell, self._heading, self._card):
            if part is not None:
                part.append(data)

    def table_with(self, header: str) -> list[list[str]]:
        return next(rows for rows in self.tables if header in rows[0])


def number(value: int) -> str:
    return f"{value:,}"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """run -> tokenize -> shard on the embedded sample corpus, a distill.train-like run and an evaluate report."""
    root = tmp_path_factory.mktemp("report")
    corpus, tokenizer, shards = root / "corpus", root / "tokenizer", root / "shards"
    run(["--output", str(corpus), "--keep-fields", "date", "--write-clusters", "--quiet"])
    assert tokenize.main(["--input", str(corpus), "--output", str(tokenizer), "--vocab-size", "900", "--quiet"]) == 0
    assert shard.main(["--input", str(corpus), "--tokenizer", str(tokenizer), "--output", str(shards),
                       "--seq-len", "64", "--shard-tokens", "20000", "--quiet"]) == 0
    distill = root / "distill"
    distill.mkdir()
    (distill / "distill_config.json").write_text(json.dumps({"objective": "minilm", "student": {"layers": 2}}))
    (distill / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": step, "loss": 2.0 / step, "attention_kl": 1.0 / step, "value_relation_kl": 1.0 / step,
         "lr": 1e-4 * min(step, 5) / 5, "tokens": 1000 * step, "tokens_per_s": 5000.0 + step, "elapsed_s": step,
         "epoch": 0}) + "\n" for step in range(10, 210, 10)))
    evaluation = root / "eval.json"
    evaluation.write_text(json.dumps({"model": "out/student", "split": "validation",
                                      "masked_lm": {"masked_tokens": 922, "mlm_loss": 6.69, "perplexity": 802.9,
                                                    "mlm_accuracy": 0.0011, "teacher_agreement": 0.25},
                                      "sentiment": {"examples": 2000, "accuracy": 0.75, "majority_baseline": 0.5}}))
    return {"corpus": corpus, "tokenizer": tokenizer, "shards": shards, "distill": distill, "eval": evaluation}


def build(outputs: dict, target: Path, *extra: str) -> tuple[str, list[str]]:
    """Run the command; the page and the messages of the warnings it raised."""
    paths = [str(outputs[name]) for name in ("eval", "shards", "distill", "tokenizer", "corpus")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert report.main([*paths, "--output", str(target), "--quiet", *extra]) == 0
    return target.read_text(encoding="utf-8"), [str(warning.message) for warning in caught]


@pytest.fixture(scope="module")
def page(outputs, tmp_path_factory):
    text, _ = build(outputs, tmp_path_factory.mktemp("page") / "report.html")
    return text


def test_every_section_in_order(page):
    parsed = Page(page)
    assert {"corpus-1", "tokenizer-2", "shards-3", "distill-4", "evaluation"} <= parsed.ids
    assert {"flow", "lengths", "months", "clean", "rejected", "clusters", "split-words"} <= parsed.ids
    assert page.index('id="corpus-1"') < page.index('id="tokenizer-2"') < page.index('id="shards-3"')


def test_corpus_counts_match_stats(page, outputs):
    stats = json.loads((outputs["corpus"] / "stats.json").read_text())
    parsed = Page(page)
    assert parsed.cards["records read"] == [number(stats["input_records"])]
    assert parsed.cards["records written"] == [number(stats["output_records"])]
    flow = parsed.table_with("records after it")[1:]
    assert [(row[0], row[1]) for row in flow] == [(step["step"], number(step["records"]))
                                                 for step in corpus_flow(stats)]
    for reason, count in stats["dropped"].items():
        assert any(heading.startswith(f"{reason}: {number(count)}") for heading in parsed.headings), reason
        assert f"{reason} {number(count)}" in "".join(row[4] for row in flow)
    assert parsed.cards["clusters"] == [number(stats["near_dedup"]["clusters"])]


def test_rejected_examples_come_from_rejected(page, outputs):
    rejected = [json.loads(line) for path in sorted((outputs["corpus"] / "rejected").glob("*.jsonl"))
                for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [row for table in Page(page).tables if table[0][:3] == ["source", "line", "raw line"] for row in table[1:]]
    assert sorted((row[0], row[1], row[2]) for row in rows) == sorted(
        (r["source"], number(r["line"]), r["raw"]) for r in rejected)


def test_clusters_side_by_side_with_their_texts(page):
    assert page.count('<div class="cluster">') == 10
    assert page.count('<div class="member kept">') == 10
    assert "text not found" not in page
    assert "<mark>" in page or "<del>" in page  # near duplicates differ somewhere


def test_tokenizer_and_shard_counts(page, outputs):
    tokenizer = json.loads((outputs["tokenizer"] / "tokenizer_report.json").read_text())
    manifest = json.loads((outputs["shards"] / "manifest.json").read_text())
    parsed = Page(page)
    assert parsed.cards["vocabulary entries"] == [number(tokenizer["vocab_size"])]
    rows = {row[0]: row for row in parsed.table_with("documents / sequence")[1:]}
    for name, split in manifest["splits"].items():
        assert rows[name][1:4] == [number(split["sequences"]), number(split["tokens"]), number(split["documents"])]
        assert rows[name][4] == f"{split['tokens'] / (split['sequences'] * manifest['seq_len']):.1%}"
    words = parsed.table_with("pieces")[1:]
    assert words and all(len(row[3].split()) >= 3 for row in words)


def test_distillation_and_evaluation(page):
    parsed = Page(page)
    assert parsed.cards["last step"] == ["200"]
    row = parsed.table_with("MLM accuracy")[1]
    assert row[1] == "out/student" and "922" in row and "0.75" in row


def test_images_are_valid_and_nontrivial(page):
    images = IMAGE.findall(page)
    assert len(images) >= 12
    for kind, data in images:
        raw = base64.b64decode(data)
        assert len(raw) > 4000
        if kind == "png":
            assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            root = ElementTree.fromstring(raw)
            assert root.tag == "{http://www.w3.org/2000/svg}svg"
            assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 5


def test_self_contained_and_the_font_is_named(page):
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "url(http" not in page
    assert "NanumGothic" in page and "@font-face" in page
    assert any(HANGUL.search(row[1]) for row in Page(page).table_with("pieces")[1:])


def test_without_a_hangul_font_korean_stays_html_text(outputs, tmp_path, monkeypatch):
    monkeypatch.setattr(report_plots, "font_candidates", lambda: [])
    text, caught = build(outputs, tmp_path / "report.html")
    assert not [message for message in caught if "missing from font" in message]
    assert "No font with Hangul glyphs was found" in text and "@font-face" not in text
    words = Page(text).table_with("pieces")[1:]
    assert any(HANGUL.search(row[1]) for row in words)  # the Korean words are in the HTML table
    assert len(IMAGE.findall(text)) >= 12


def test_no_glyph_is_missing_from_any_figure(outputs, tmp_path, caplog):
    """Log axes (the distillation losses) and Korean labels draw every glyph: no warning, no dummy symbol."""
    text, caught = build(outputs, tmp_path / "report.html")
    problems = [m for m in caught if "missing from font" in m] + [
        record.getMessage() for record in caplog.records if "glyph" in record.getMessage()]
    assert not problems and len(IMAGE.findall(text)) >= 12


def test_the_same_inputs_give_the_same_figures(outputs, tmp_path, page):
    again, _ = build(outputs, tmp_path / "again.html")
    assert IMAGE.findall(again) == IMAGE.findall(page)


def test_profile_in_stats_is_used_instead_of_the_sample(outputs, tmp_path):
    """Once pipeline.run writes stats.json's `profile`, the page shows it and drops the sample notes."""
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(outputs["corpus"], corpus)
    stats = json.loads((corpus / "stats.json").read_text())
    stats["profile"] = {"length_before": {"2": 3, "10": 40}, "length_after": {"10": 40},
                        "length_edges": [0, 1, 2, 5, 10],
                        "clean_sample": {"every": 100, "texts": 32, "changed": 8, "disallowed_characters": 4,
                                         "urls": 1, "repeats": 3, "whitespace": 5, "nfc": 0}}
    (corpus / "stats.json").write_text(json.dumps(stats))
    assert report.main([str(corpus), "--output", str(tmp_path / "r.html"), "--quiet"]) == 0
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Counted by pipeline.run on one text in 100 (32 texts)" in text
    assert "counted by pipeline.run over every record" in text


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.report", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_unknown_directory_is_a_usage_error(tmp_path):
    (tmp_path / "something").mkdir()
    result = run_cli(str(tmp_path / "something"), "--output", str(tmp_path / "r.html"))
    assert result.returncode == 2 and result.stdout == ""
    assert "none of the outputs pipeline.report knows; expected a pipeline.run output" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("case", ["missing", "unfinished", "json", "exists", "directory"])
def test_other_usage_errors(case, tmp_path, capsys):
    target, path = tmp_path / "r.html", tmp_path / "input"
    expected = {"missing": "no such file or directory", "unfinished": "unfinished pipeline.run output",
                "json": "not a distill.evaluate JSON report", "exists": "already exists; pass --overwrite",
                "directory": "is a directory"}[case]
    if case == "unfinished":
        (path / "clean").mkdir(parents=True)
    elif case == "json":
        path = tmp_path / "other.json"
        path.write_text('{"a": 1}')
    elif case in ("exists", "directory"):
        (path / "clean").mkdir(parents=True)
        target.mkdir() if case == "directory" else target.write_text("earlier")
    assert report.main([str(path), "--output", str(target)]) == 2
    assert expected in capsys.readouterr().err


def test_help_is_fast():
    code = ("import runpy, sys\nsys.argv = ['pipeline.report', '--help']\ntry:\n"
            "    runpy.run_module('pipeline.report', run_name='__main__')\nexcept SystemExit as exited:\n"
            "    assert exited.code == 0\n"
            "print('HEAVY', sorted(m for m in ('matplotlib', 'apache_beam', 'torch', 'pyarrow.parquet') "
            "if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stderr
    assert "--overwrite" in result.stdout and "--json" in result.stdout and "(default:" in result.stdout


def test_json_summary(outputs, tmp_path, capsys):
    assert report.main([str(outputs["tokenizer"]), "--output", str(tmp_path / "r.html"), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sections"] == [{"kind": "tokenizer", "path": str(outputs["tokenizer"])}]
    assert summary["bytes"] == (tmp_path / "r.html").stat().st_size and summary["font"]["name"] == "NanumGothic"
