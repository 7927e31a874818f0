"""What `pipeline.report` shows, collected from the stage outputs: detection, then one collector per kind.

Every read goes through transforms.storage (local, gs://, s3://) and is bounded: Parquet is
streamed in record batches (only the columns a figure needs), JSON lines are read line by
line and left as soon as enough examples are held, and anything that needs the raw input
(what the clean changed, lengths before the filter, the texts of near-duplicate clusters)
reads at most `Limits.sample_lines` / `Limits.scan_lines` lines of it. Where a figure comes
from a sample rather than from a count of the whole run, the collected data says so
(`source`), and the page repeats it. The stages can count the same things while they run
(transforms.profile); when stats.json holds them (`profile`), they are used instead.

Nothing here imports matplotlib: the data is plain dicts and lists (pipeline/report_html.py
renders them, pipeline/report_plots.py draws them).
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass

from transforms import drop_reasons, storage

CORPUS, TOKENIZER, SHARDS, DISTILL, EVALUATION = "corpus", "tokenizer", "shards", "distill", "evaluation"
KINDS = (CORPUS, TOKENIZER, SHARDS, DISTILL, EVALUATION)  # the page's order
EXPECTED = ("a pipeline.run output (stats.json and clean/), a pipeline.tokenize output (tokenizer_report.json and "
            "vocab.txt), a pipeline.shard output (manifest.json of koforge-token-shards/1), a distill.train output "
            "(distill_config.json and metrics.jsonl) or a distill.evaluate JSON report (a .json file)")
# Which step of pipeline.run drops a record for each reason (transforms.drop_reasons), in the data's order.
FLOW_STEPS = (
    ("parsed", (drop_reasons.INVALID_UTF8, drop_reasons.MALFORMED_JSON, drop_reasons.NOT_AN_OBJECT,
                drop_reasons.MISSING_TEXT, drop_reasons.TEXT_NOT_STRING, drop_reasons.MALFORMED_ROW,
                drop_reasons.BAD_ID, drop_reasons.BAD_FIELD, drop_reasons.LINE_TOO_LONG, drop_reasons.READ_ERROR,
                drop_reasons.BLANK_LINE)),
    ("cleaned", (drop_reasons.EMPTY_AFTER_CLEAN,)),
    ("length filter", (drop_reasons.TOO_SHORT, drop_reasons.TOO_LONG)),
    ("exact dedup", (drop_reasons.EXACT_DUPLICATE,)),
    ("near dedup", (drop_reasons.NEAR_DUPLICATE,)),
)
FILTERED_REASONS = (drop_reasons.EMPTY_AFTER_CLEAN, drop_reasons.TOO_SHORT, drop_reasons.TOO_LONG)
DATE_NAME = re.compile(r"date|time|day|month|created|published", re.IGNORECASE)
PARQUET_BATCH_ROWS = 64 * 1024
SHARD_SAMPLE_ROWS = 10_000


class ReportInputError(ValueError):
    """A path given to pipeline.report is not a stage output it can read; the message says what was expected."""


@dataclass(frozen=True)
class Limits:
    """How much of the data the report reads beyond the stages' own reports (all bounded)."""

    sample_lines: int = 20_000  # raw input lines profiled (clean changes, lengths before the filter)
    scan_lines: int = 1_000_000  # raw input lines searched for the texts of the largest clusters
    examples: int = 20  # rejected lines shown per reason
    clusters: int = 10  # largest near-duplicate clusters shown
    members: int = 4  # members shown per cluster
    words: int = 20  # split words shown


# ---------------------------------------------------------------- detection


def detect(path: str) -> str:
    """The kind of output at `path`, from its completion marker and files; ReportInputError if none."""
    if storage.is_file(path):
        if path.lower().endswith(".json") and _is_evaluation(path):
            return EVALUATION
        raise ReportInputError(f"{path} is a file but not a distill.evaluate JSON report; expected {EXPECTED}")
    if not storage.is_dir(path):
        raise ReportInputError(f"{path}: no such file or directory")
    has = lambda name: storage.exists(storage.join(path, name))  # noqa: E731
    if has("stats.json") and has("clean"):
        return CORPUS
    if has("manifest.json"):
        manifest = storage.read_json(storage.join(path, "manifest.json"))
        if isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("koforge-token-shards/"):
            return SHARDS
    if has("tokenizer_report.json") and has("vocab.txt"):
        return TOKENIZER
    if has("distill_config.json") and has("metrics.jsonl"):
        return DISTILL
    if has("clean") and not has("stats.json"):
        raise ReportInputError(f"{path} is an unfinished pipeline.run output (clean/ without stats.json)")
    raise ReportInputError(f"{path} is none of the outputs pipeline.report knows; expected {EXPECTED}")


def _is_evaluation(path: str) -> bool:
    try:
        report = storage.read_json(path)
    except (ValueError, OSError):
        return False
    return isinstance(report, dict) and any(key in report for key in ("masked_lm", "sentiment", "tasks"))


# ---------------------------------------------------------------- corpus


def corpus_flow(stats: dict) -> list[dict]:
    """The records after each step of pipeline.run, with what the step dropped per reason.

    [{"step", "records" (after it), "dropped" {reason: n}}]; starts with "read" and ends with
    "written", whose count is stats' output_records.
    """
    dropped = stats.get("dropped", {})
    remaining = stats["input_records"]
    flow = [{"step": "read", "records": remaining, "dropped": {}}]
    known = set()
    for step, reasons in FLOW_STEPS:
        here = {reason: dropped[reason] for reason in reasons if dropped.get(reason)}
        known.update(reasons)
        remaining -= sum(here.values())
        flow.append({"step": step, "records": remaining, "dropped": here})
    other = {reason: n for reason, n in dropped.items() if reason not in known and n}
    flow.append({"step": "written", "records": stats["output_records"], "dropped": other})
    return flow


def collect_corpus(path: str, limits: Limits, date_field: str | None, progress) -> dict:
    """Everything the corpus section shows: flow, lengths, months, rejected and filtered examples, clusters."""
    stats = storage.read_json(storage.join(path, "stats.json"))
    options = stats.get("options", {})
    data = {"path": path, "stats": stats, "flow": corpus_flow(stats), "profile": stats.get("profile") or {}}
    field = date_field or auto_date_field(options)
    progress.say(f"{path}: streaming the clean corpus (lengths{', ' + field + ' months' if field else ''})")
    data["written"] = stream_corpus(path, field)
    progress.say(f"{path}: rejected lines, near-duplicate clusters, a sample of the input")
    data["rejected"] = rejected_examples(path, stats, limits.examples)
    data["clusters"] = largest_clusters(path, stats, limits)
    wanted = {member["id"] for cluster in (data["clusters"] or {}).get("largest", ()) for member in cluster["members"]}
    sample = raw_sample(options, limits, wanted)
    data["sample"] = {**sample_profile(sample, options, limits.examples), "error": sample["error"],
                      "wanted": sample["wanted"], "missing": sample["missing"], "scan_lines": limits.scan_lines}
    for cluster in (data["clusters"] or {}).get("largest", ()):
        for member in cluster["members"]:
            member["text"] = sample["found"].get(member["id"])
    return data


def auto_date_field(options: dict) -> str | None:
    """The first kept field whose name says it is a date (date, created_at, ...), else None."""
    from transforms.reading import FieldSpec

    try:
        kept = FieldSpec.parse_keep_fields(options.get("keep_fields") or "")
    except ValueError:
        return None
    return next((name for name, kind in kept if kind == "str" and DATE_NAME.search(name)), None)


def stream_corpus(path: str, date_field: str | None) -> dict:
    """Length histogram and records per month of the whole clean corpus, one record batch at a time."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from transforms.profile import LENGTH_EDGES

    edges = np.asarray(LENGTH_EDGES)
    lengths = np.zeros(len(edges), np.int64)
    months: Counter = Counter()
    rows, field_found = 0, False
    for name in storage.list_files(storage.join(path, storage.CORPUS_SHARDS)):
        with storage.open_random_access(storage.join(path, storage.CORPUS_SHARDS, name)) as handle:
            parquet = pq.ParquetFile(handle)
            columns = ["text"] + ([date_field] if date_field in parquet.schema_arrow.names else [])
            field_found |= len(columns) == 2
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                rows += batch.num_rows
                counted = pc.utf8_length(batch.column(0).fill_null("")).to_numpy(zero_copy_only=False)
                lengths += np.bincount(np.searchsorted(edges, counted, side="right") - 1, minlength=len(edges))
                if len(columns) == 2:
                    months.update(month_values(batch.column(1)))
    histogram = {int(edge): int(n) for edge, n in zip(edges, lengths) if n}
    return {"records": rows, "lengths": histogram, "date_field": date_field if field_found else None,
            "months": dict(sorted(months.items())) if field_found else None}


def month_values(column) -> Counter:
    """{'YYYY-MM' or 'unknown': n} of one batch's date column (strings, dates or timestamps)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from transforms.profile import month_of

    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    counts: Counter = Counter()
    for entry in pc.value_counts(pc.utf8_slice_codeunits(column, 0, 7)).to_pylist():
        counts[month_of(entry["values"]) or "unknown"] += entry["counts"]
    return counts


def rejected_examples(path: str, stats: dict, per_reason: int) -> dict:
    """{reason: the first `per_reason` rejected rows} from DIR/rejected/*.jsonl, read until each reason has enough."""
    from transforms.reading import iter_lines

    expected = {reason for reason in stats.get("dropped", {}) if reason not in (*FILTERED_REASONS,
                drop_reasons.BLANK_LINE, drop_reasons.EXACT_DUPLICATE, drop_reasons.NEAR_DUPLICATE)}
    examples: dict[str, list[dict]] = {}
    directory = storage.join(path, "rejected")
    for name in storage.list_files(directory):
        with storage.open_input(storage.join(directory, name)) as handle:
            for line in iter_lines(handle, 1 << 20):
                if line is None or not line.strip():
                    continue
                row = json.loads(line)
                rows = examples.setdefault(row.get("reason", "?"), [])
                if len(rows) < per_reason:
                    rows.append(row)
                if all(len(examples.get(reason, ())) >= per_reason for reason in expected):
                    return dict(sorted(examples.items()))
    return dict(sorted(examples.items()))


def largest_clusters(path: str, stats: dict, limits: Limits) -> dict | None:
    """The cluster-size histogram (stats.json) and the largest clusters' members (clusters/*.parquet), or None."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    near = stats.get("near_dedup")
    if near is None:
        return None
    result = {"histogram": {int(size): n for size, n in near.get("cluster_size_histogram", {}).items()},
              "clusters": near.get("clusters", 0), "removed": near.get("removed", 0), "largest": [],
              "written": False}
    directory = storage.join(path, "clusters")
    files = [storage.join(directory, name) for name in storage.list_files(directory) if name.endswith(".parquet")]
    if not files:
        return result
    result["written"] = True
    tables = []
    for file in files:
        with storage.open_random_access(file) as handle:
            tables.append(pq.read_table(handle, columns=["id", "cluster_id", "kept"]))
    table = pa.concat_tables(tables)
    sizes = sorted(((entry["counts"], entry["values"]) for entry in pc.value_counts(table.column("cluster_id"))
                    .to_pylist()), key=lambda pair: (-pair[0], pair[1]))[: limits.clusters]
    chosen = table.filter(pc.is_in(table.column("cluster_id"), pa.array([cluster for _, cluster in sizes])))
    by_cluster: dict[str, list[dict]] = {}
    for row in chosen.to_pylist():
        by_cluster.setdefault(row["cluster_id"], []).append(row)
    for size, cluster in sizes:
        members = sorted(by_cluster[cluster], key=lambda row: (not row["kept"], row["id"]))[: limits.members]
        result["largest"].append({"cluster_id": cluster, "size": size,
                                  "members": [{"id": row["id"], "kept": row["kept"]} for row in members]})
    return result


# ---------------------------------------------------------------- the raw input: a sample, and cluster texts


def raw_sample(options: dict, limits: Limits, wanted: set[str]) -> dict:
    """A profile of the first `sample_lines` input lines, and the cleaned texts of the `wanted` ids.

    The run's own options say where its input is and how to read it (stats.json `options`).
    The wanted ids (members of the largest clusters) are looked for in at most `scan_lines`
    lines; a line is parsed only when it can hold one of them (a byte search first).
    """
    from transforms.clean import CleanOptions, clean_text

    clean_options = CleanOptions(nfc=bool(options.get("nfc")), keep_digit_runs=bool(options.get("keep_digit_runs")),
                                 keep_hanja=bool(options.get("keep_hanja")))
    result = {"lines": 0, "texts": [], "found": {}, "error": None, "clean_options": clean_options}
    left = set(wanted)
    search = (re.compile(b"|".join(re.escape(identifier.encode("utf-8")) for identifier in sorted(left)))
              if left else None)
    derived = {_derived(identifier) for identifier in left} - {None}
    try:
        for lines, record_id, text in iter_raw_records(options, limits.scan_lines,
                                                       lambda raw, name, number: _may_hold(raw, name, number,
                                                                                           search, derived),
                                                       limits.sample_lines, lambda: bool(left)):
            if lines <= limits.sample_lines:
                result["lines"] = lines
                result["texts"].append(text)
            if record_id in left:
                result["found"][record_id] = clean_text(text, clean_options)
                left.discard(record_id)
    except (OSError, ValueError, EOFError) as error:  # a moved, unreadable or truncated input: said on the page
        result["error"] = f"{type(error).__name__}: {error}"
    result["wanted"], result["missing"] = len(wanted), sorted(left)
    return result


def _derived(identifier: str) -> tuple[str, int] | None:
    """(file name, line) of a FILE:LINE id (reading.derived_id), else None."""
    match = re.fullmatch(r"(.+):(\d{10})", identifier)
    return (match.group(1), int(match.group(2))) if match else None


def _may_hold(raw: bytes, name: str, number: int, search, derived: set) -> bool:
    return (name, number) in derived or (search is not None and search.search(raw) is not None)


def input_files(options: dict) -> list[tuple[str, str]]:
    """(path, name as ids and rejected/ show it) of the run's input files, as pipeline.run lists them."""
    patterns = options.get("input")
    if not patterns:
        raise ValueError("stats.json does not record the run's --input")
    paths = [file.path for file in storage.list_inputs(list(patterns), directories="files")]
    common = os.path.dirname(os.path.commonprefix(paths)) if len(paths) > 1 else os.path.dirname(paths[0])
    return [(path, path[len(common):].lstrip("/") if common else path) for path in paths]


def iter_raw_records(options: dict, max_lines: int, keep, sample_lines: int, searching):
    """(lines read, id, raw text) of the parsed records among the first `max_lines` input lines.

    Every line of the first `sample_lines` is parsed; a later one only when `keep(raw, name,
    line)` says so, and reading stops once `searching()` is false past the sample.
    """
    from transforms import reading

    fields = reading.FieldSpec(options.get("text_field") or "text", options.get("id_field") or None,
                               reading.FieldSpec.parse_keep_fields(options.get("keep_fields") or ""))
    encoding = reading.check_encoding(options.get("encoding") or reading.DEFAULT_ENCODING)
    quoting = options.get("quoting") or "auto"
    lines = 0
    for path, name in input_files(options):
        fmt = reading.detect_format(path) if options.get("format", "auto") == "auto" else options["format"]
        with storage.open_decompressed(path) as stream:  # records as the run reads them (reading.RecordReader)
            records = reading.RecordReader(stream, fmt, options.get("max_line_bytes") or 8 << 20, quoting, encoding)
            for number, raw in records:
                lines += 1
                if lines > max_lines or (lines > sample_lines and not searching()):
                    return
                if raw is None or (lines > sample_lines and not keep(getattr(raw, "raw", raw), name, number)):
                    continue
                parsed = reading.parse_line(raw, fmt, fields, records.header, encoding, quoting)
                if not isinstance(parsed, str):
                    yield lines, parsed[0] if parsed[0] is not None else reading.derived_id(name, number), parsed[1]


def sample_profile(sample: dict, options: dict, examples: int) -> dict:
    """Lengths before and after the filter, clean rule changes and filtered examples, on the raw sample."""
    from transforms import profile

    cleaned = [profile.clean_steps(text, sample["clean_options"])[-1][1] for text in sample["texts"]]
    low, high = options.get("min_chars") or 0, options.get("max_chars")
    filtered: dict[str, dict[str, dict]] = {}  # reason -> raw text -> example (distinct texts, counted)
    kept = []
    for raw, text in zip(sample["texts"], cleaned):
        reason = (drop_reasons.EMPTY_AFTER_CLEAN if not text else drop_reasons.TOO_SHORT if len(text) < low
                  else drop_reasons.TOO_LONG if high is not None and len(text) > high else None)
        if reason is None:
            kept.append(text)
            continue
        seen = filtered.setdefault(reason, {})
        if raw in seen:
            seen[raw]["count"] += 1
        elif len(seen) < examples:
            seen[raw] = {"raw": raw[:1000], "clean": text[:1000], "count": 1}
    return {"lines": sample["lines"], "records": len(cleaned),
            "length_before": dict(sorted(profile.length_histogram(map(len, cleaned)).items())),
            "length_after": dict(sorted(profile.length_histogram(map(len, kept)).items())),
            "clean": dict(profile.clean_rule_changes(sample["texts"], sample["clean_options"])),
            "filtered": {reason: list(seen.values()) for reason, seen in filtered.items()}}


# ---------------------------------------------------------------- tokenizer, shards, distillation, evaluation


def collect_tokenizer(path: str, limits: Limits, corpus_paths: list[str]) -> dict:
    """tokenizer_report.json, the vocabulary's entry lengths, and the frequent words it splits most (on a sample)."""
    from transforms import profile

    report = storage.read_json(storage.join(path, "tokenizer_report.json"))
    vocabulary = storage.read_bytes(storage.join(path, "vocab.txt")).decode("utf-8").splitlines()
    data = {"path": path, "report": report, "token_lengths": dict(sorted(profile.token_lengths(vocabulary).items())),
            "split_words": None, "split_source": None, "split_error": None}
    try:
        texts, source = corpus_texts(corpus_paths or list(report.get("inputs") or []), limits.sample_lines,
                                     (report.get("options") or {}).get("text_field") or "text")
        if texts:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(storage.read_bytes(storage.join(path, "tokenizer.json")).decode("utf-8"))
            data["split_words"] = profile.split_words(tokenizer, texts, top=limits.words)
            data["split_source"] = source
    except (OSError, ValueError, KeyError) as error:
        data["split_error"] = f"{type(error).__name__}: {error}"
    return data


def corpus_texts(inputs: list[str], limit: int, text_field: str) -> tuple[list[str], str]:
    """The first `limit` texts of a clean corpus (or of Parquet files), and where they came from."""
    import pyarrow.parquet as pq

    files = [file.path for file in storage.list_inputs(inputs, directories="corpus")
             if file.path.lower().endswith(".parquet")]
    texts: list[str] = []
    for file in files:
        with storage.open_random_access(file) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
                texts.extend(text for text in batch.column(0).to_pylist()[: limit - len(texts)] if text)
                if len(texts) >= limit:
                    return texts, f"the first {len(texts):,} texts of {inputs[0]}"
    return texts, f"the {len(texts):,} texts of {inputs[0]}"


def collect_shards(path: str) -> dict:
    """manifest.json, with per-split packing figures, and fill / documents per sequence on a sample of rows."""
    import numpy as np

    manifest = storage.read_json(storage.join(path, "manifest.json"))
    seq_len = manifest["seq_len"]
    splits = {}
    for name, split in manifest.get("splits", {}).items():
        slots = split["sequences"] * seq_len
        splits[name] = {**{key: split.get(key, 0) for key in ("sequences", "tokens", "documents", "empty_documents",
                                                              "split_documents")},
                        "shards": len(split.get("shards", [])),
                        "fill": split["tokens"] / slots if slots else None,
                        "documents_per_sequence": split.get("documents", 0) / split["sequences"]
                        if split["sequences"] else None}
    sample = None
    first = next((split["shards"][0]["file"] for split in manifest.get("splits", {}).values() if split.get("shards")),
                 None)
    if first is not None:
        ids = shard_rows(storage.join(path, first), SHARD_SAMPLE_ROWS)
        special = manifest.get("special_tokens", {})
        sample = {"file": first, "rows": len(ids),
                  "fill": np.bincount((ids != special.get("pad", 0)).sum(axis=1), minlength=seq_len + 1).tolist(),
                  # every document (or piece of one) in a sequence ends with [SEP] (docs/shard.md, Packing)
                  "documents": dict(sorted(Counter((ids == special.get("sep", 3)).sum(axis=1).tolist()).items()))}
    return {"path": path, "manifest": manifest, "splits": splits, "sample": sample}


def shard_rows(path: str, limit: int):
    """The first `limit` rows of an Arrow IPC token shard as a 2-D numpy array (rows x seq_len)."""
    import numpy as np
    import pyarrow as pa

    with storage.open_random_access(path) as handle:
        reader = pa.ipc.open_file(handle)
        column = reader.get_batch(0).column(0).slice(0, limit) if reader.num_record_batches else None
        if column is None or not len(column):
            return np.zeros((0, 0), np.uint16)
        return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def collect_distill(path: str) -> dict:
    """metrics.jsonl (every logged step) and the run's configs."""
    from transforms.reading import iter_lines

    rows = []
    with storage.open_input(storage.join(path, "metrics.jsonl")) as handle:
        for line in iter_lines(handle, 1 << 20):
            if line and line.strip():
                rows.append(json.loads(line))
    configs = {}
    for name in ("distill_config.json", "train_config.json"):
        if storage.exists(storage.join(path, name)):
            configs[name] = storage.read_json(storage.join(path, name))
    standard = {"step", "loss", "lr", "tokens", "tokens_per_s", "elapsed_s", "epoch"}
    terms = sorted({key for row in rows for key, value in row.items()
                    if key not in standard and isinstance(value, (int, float))})
    return {"path": path, "metrics": rows, "terms": terms, "configs": configs}


def collect_evaluation(path: str) -> dict:
    """One distill.evaluate report."""
    return {"path": path, "report": storage.read_json(path)}
