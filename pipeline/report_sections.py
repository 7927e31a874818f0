"""The sections of `pipeline.report`'s page, one builder per output kind: collected data in, HTML out.

Each builder turns what pipeline/report_data.py collected into headings, number cards,
figures (pipeline/report_plots.py) and tables (pipeline/report_html.py). Captions say where
each figure's numbers come from: the stage's own counts (stats.json, tokenizer_report.json,
manifest.json, metrics.jsonl), the whole output streamed, or a sample, marked as such.
"""
from __future__ import annotations

from pipeline.report_data import FILTERED_REASONS
from pipeline.report_html import cards, esc, figure, marked, number, plural, pretty, sample_note, share, table
from pipeline.report_plots import RULE_LABELS, Figures


# ---------------------------------------------------------------- corpus


def corpus_section(data: dict, figures: Figures, anchor: str) -> str:
    stats = data["stats"]
    total, kept = stats["input_records"], stats["output_records"]
    head = (f'<section id="{esc(anchor)}"><h2>Corpus: {esc(data["path"])}</h2>'
            + cards([("records read", total), ("records written", kept), ("kept", share(kept, total)),
                     ("input files", stats.get("files", {}).get("matched")),
                     ("output shards", stats.get("num_shards"))]))
    parts = [head, corpus_flow(data, figures), corpus_lengths(data, figures), corpus_months(data, figures),
             corpus_clean(data, figures), corpus_clusters(data, figures), corpus_rejected(data)]
    return "\n".join(part for part in parts if part) + "</section>"


def corpus_flow(data: dict, figures: Figures) -> str:
    """Records after each step, and what each step dropped, by reason, as a share of the input."""
    flow, total = data["flow"], data["stats"]["input_records"]
    rows = []
    for before, step in zip([None, *flow], flow):
        dropped = sum(step["dropped"].values())
        reasons = ", ".join(f"{reason} {n:,} ({share(n, total)})" for reason, n in step["dropped"].items())
        rows.append([step["step"], step["records"], dropped if before else None, share(dropped, total) if before
                     else "", reasons])
    caption = ("Records after each step of pipeline.run (dark) and what the step dropped (light), from stats.json: "
               "every input line is written or counted under one drop reason.")
    return ('<h3 id="flow">Flow: read → parsed → cleaned → length filter → exact dedup → near dedup → written</h3>'
            + figure(figures.flow(flow), caption, "corpus flow")
            + table(["step", "records after it", "dropped here", "share of input", "by reason"], rows, numeric={1, 2, 3}))


def corpus_lengths(data: dict, figures: Figures) -> str:
    """Text lengths before and after the length filter (the stage's counts, else a sample) and in clean/."""
    profile, sample, written = data["profile"], data["sample"], data["written"]
    options = data["stats"].get("options", {})
    limits = (f"--min-chars {options.get('min_chars')}, --max-chars {options.get('max_chars') or 'none'}"
              if "min_chars" in options else "")
    if profile.get("length_before"):
        series = [("before the length filter", profile["length_before"]),
                  ("after the length filter", profile.get("length_after", {}))]
        caption = f"Cleaned text lengths counted by pipeline.run over every record ({esc(limits)}). "
    elif sample["records"]:
        series = [("sample, before the filter", sample["length_before"]),
                  ("sample, after the filter", sample["length_after"])]
        caption = (sample_note(f"before/after: the first {sample['lines']:,} input lines ({sample['records']:,} "
                               f"records), cleaned and filtered here as pipeline.run does ({limits}).") + " ")
    else:
        series, caption = [], f"No sample of the input could be read ({esc(sample['error'])}). "
    series.append(("written corpus", written["lengths"]))
    caption += f"Written corpus: every text of clean/ ({written['records']:,}), streamed. Bars: share of each series."
    return '<h3 id="lengths">Text lengths</h3>' + figure(figures.length_histogram(series), caption, "text lengths")


def corpus_months(data: dict, figures: Figures) -> str:
    written = data["written"]
    if not written.get("months"):
        return ('<h3>Records per month</h3><p class="note">No date field was kept (pipeline.run --keep-fields date), '
                "so records cannot be placed in time.</p>")
    caption = (f"Records of clean/ per month of the field <code>{esc(written['date_field'])}</code> "
               f"(every record; values that are not ISO dates count as unknown).")
    return '<h3 id="months">Records per month</h3>' + figure(figures.months(written["months"]), caption, "months")


def corpus_clean(data: dict, figures: Figures) -> str:
    """The share of texts each rule of the clean changed."""
    profile, sample = data["profile"], data["sample"]
    if profile.get("clean_sample"):
        changes = profile["clean_sample"]
        caption = esc(f"Counted by pipeline.run on one text in {changes.get('every')} ({changes['texts']:,} texts).")
    elif sample["records"]:
        changes = sample["clean"]
        caption = sample_note(f"the first {sample['lines']:,} input lines ({changes.get('texts', 0):,} texts), "
                              "each rule of the clean applied in turn (transforms.profile.clean_rule_changes).")
    else:
        return f'<h3>What the clean changed</h3><p class="note">No sample of the input: {esc(sample["error"])}</p>'
    rows = [[RULE_LABELS[rule], changes.get(rule, 0), share(changes.get(rule, 0), changes.get("texts", 0))]
            for rule in RULE_LABELS if rule in changes]
    return ('<h3 id="clean">What the clean changed</h3><div class="row">'
            + figure(figures.clean_changes(changes), caption, "clean changes")
            + table(["rule", "texts changed", "share"], rows, numeric={1, 2}) + "</div>")


def corpus_rejected(data: dict) -> str:
    """Examples per drop reason: rejected/ for lines that are not records, the sample for the length filter."""
    stats, rejected, sample = data["stats"], data["rejected"], data["sample"]
    parts = ['<h3 id="rejected">Dropped lines, by reason</h3>']
    for reason, count in stats.get("dropped", {}).items():
        if reason in rejected:
            rows = [[row.get("source"), row.get("line"), row.get("raw", "")] for row in rejected[reason]]
            parts.append(f"<h4>{esc(reason)}: {plural(count, 'line')}</h4><p class=\"note\">The first {len(rows)} in "
                         "rejected/.</p>" + table(["source", "line", "raw line"], rows, numeric={1}, raw={2}))
        elif reason in FILTERED_REASONS and sample.get("filtered", {}).get(reason):
            rows = [[row["raw"], row["clean"], row["count"]] for row in sample["filtered"][reason]]
            parts.append(f"<h4>{esc(reason)}: {plural(count, 'record')}</h4><p class=\"note\">"
                         + sample_note(f"distinct examples from the first {sample['lines']:,} input lines, with how "
                                       "often each occurs there.") + "</p>"
                         + table(["raw text", "after the clean", "times"], rows, numeric={2}, raw={0, 1}))
        else:
            parts.append(f"<h4>{esc(reason)}: {count:,}</h4><p class=\"note\">Counted only"
                         + (": see the clusters above." if reason == "near_duplicate" else ".") + "</p>")
    return "".join(parts)


def corpus_clusters(data: dict, figures: Figures) -> str:
    """The cluster-size histogram and the largest clusters, members side by side, differences marked."""
    clusters = data["clusters"]
    if clusters is None:
        return '<h3>Near-duplicate clusters</h3><p class="note">Near dedup was off (--no-near-dedup).</p>'
    parts = ['<h3 id="clusters">Near-duplicate clusters</h3>',
             cards([("clusters", clusters["clusters"]), ("texts removed", clusters["removed"])])]
    if clusters["histogram"]:
        parts.append(figure(figures.cluster_sizes(clusters["histogram"]),
                            "Clusters per size (texts in the cluster, the kept one included), from stats.json.",
                            "cluster sizes"))
    if not clusters["written"]:
        parts.append('<p class="note">clusters/ was not written (pipeline.run --write-clusters), so the members of '
                     "clusters cannot be shown.</p>")
        return "".join(parts)
    sample = data["sample"]
    parts.append(f"<h4>The {len(clusters['largest'])} largest clusters</h4><p class=\"note\">Members as cleaned "
                 "text, the kept one first; marked: what differs from it. Texts are looked up in the "
                 f"first {sample['scan_lines']:,} input lines.</p>")
    for cluster in clusters["largest"]:
        reference = next((m["text"] for m in cluster["members"] if m["kept"] and m["text"] is not None), None)
        members = []
        for member in cluster["members"]:
            text = member["text"]
            body = ('<span class="note">(text not found in the lines searched)</span>' if text is None
                    else esc(text) if member["kept"] or reference is None else marked(text, reference))
            members.append(f'<div class="member{" kept" if member["kept"] else ""}"><div class="id">'
                           f'{esc(member["id"])} · {"kept" if member["kept"] else "removed"}</div>{body}</div>')
        shown = f", {len(cluster['members'])} shown" if len(cluster["members"]) < cluster["size"] else ""
        parts.append(f'<div class="cluster"><b>cluster {esc(cluster["cluster_id"])}</b> '
                     f'<span class="note">{cluster["size"]:,} texts{shown}</span>'
                     f'<div class="members">{"".join(members)}</div></div>')
    return "".join(parts)


# ---------------------------------------------------------------- tokenizer and shards


def tokenizer_section(data: dict, figures: Figures, anchor: str) -> str:
    """tokenizer_report.json's evaluation, the vocabulary's entry lengths, and the words it splits most."""
    report = data["report"]
    evaluation = report.get("evaluation") or {}
    rate = lambda key, digits=3: (f"{evaluation[key]:.{digits}%}"  # noqa: E731
                                  if evaluation.get(key) is not None else "–")
    parts = [f'<section id="{esc(anchor)}"><h2>Tokenizer: {esc(data["path"])}</h2>',
             cards([("vocabulary entries", report.get("vocab_size")), ("tokens per word", evaluation.get("fertility")),
                    ("[UNK] rate (tokens)", rate("unk_rate")), ("words kept whole", rate("whole_word_share", 1)),
                    ("documents trained on", report.get("sampled_documents")),
                    ("held-out documents", report.get("eval_documents"))]),
             '<p class="note">Measured by pipeline.tokenize on its held-out sample (tokenizer_report.json): '
             f"{number(evaluation.get('words'))} words, {number(evaluation.get('tokens'))} tokens, "
             f"{number(evaluation.get('unk_words'))} words with an [UNK] ({rate('unk_word_rate')}).</p>"]
    for warning in report.get("warnings") or []:
        parts.append(f'<p class="warn">{esc(warning)}</p>')
    parts.append(figure(figures.token_lengths(data["token_lengths"]),
                        "Vocabulary entries by length (vocab.txt; special tokens left out).", "token lengths"))
    parts.append('<h3 id="split-words">Words cut into many pieces</h3>' + tokenizer_split_words(data, figures)
                 + "</section>")
    return "".join(parts)


def tokenizer_split_words(data: dict, figures: Figures) -> str:
    rows = data["split_words"]
    if data["split_error"]:
        return f'<p class="note">The corpus could not be read for split words: {esc(data["split_error"])}</p>'
    if not rows:
        return '<p class="note">No frequent word of the sample is cut into three or more pieces.</p>'
    caption = (sample_note(f"{data['split_source']}.") + " The most frequent words (as BERT's pre-tokenizer cuts "
               "text: at spaces and punctuation) that the vocabulary splits into three or more pieces"
               + (" (numbered; the table names them)." if not figures.font else "."))
    return ("<div>" + figure(figures.split_words(rows), caption, "split words")
            + table(["#", "word", "occurrences", "pieces"],
                    [[rank, row["word"], row["count"], " ".join(row["pieces"])] for rank, row in enumerate(rows, 1)],
                    numeric={0, 2}) + "</div>")


def shards_section(data: dict, figures: Figures, anchor: str) -> str:
    """manifest.json per split: sequences, tokens, packing fill, documents per sequence; a sample's distributions."""
    manifest, splits = data["manifest"], data["splits"]
    seq_len = manifest["seq_len"]
    parts = [f'<section id="{esc(anchor)}"><h2>Token shards: {esc(data["path"])}</h2>',
             cards([("sequences", sum(s["sequences"] for s in splits.values())),
                    ("tokens (non-[PAD])", sum(s["tokens"] for s in splits.values())),
                    ("ids per sequence", seq_len), ("vocabulary", manifest.get("vocab_size")),
                    ("packing", manifest.get("packing")), ("documents read", manifest.get("documents_read"))])]
    rows = [[name, s["sequences"], s["tokens"], s["documents"],
             f"{s['fill']:.1%}" if s["fill"] is not None else "–",
             f"{1 - s['fill']:.1%}" if s["fill"] is not None else "–",
             s["documents_per_sequence"], s["split_documents"], s["empty_documents"], s["shards"]]
            for name, s in splits.items()]
    parts.append(table(["split", "sequences", "tokens", "documents", "filled", "[PAD]", "documents / sequence",
                        "split documents", "empty documents", "files"], rows, numeric=set(range(1, 10))))
    parts.append('<p class="note">From manifest.json: filled = tokens / (sequences × seq_len); [PAD] is the rest.</p>')
    sample = data["sample"]
    if sample and sample["rows"]:
        note = sample_note(f"the first {sample['rows']:,} sequences of {sample['file']}.")
        parts.append('<div class="row">'
                     + figure(figures.shard_fill(sample["fill"], seq_len), note, "sequence fill")
                     + figure(figures.documents_per_sequence(sample["documents"]), note, "documents per sequence")
                     + "</div>")
    return "".join(parts) + "</section>"


# ---------------------------------------------------------------- distillation and evaluation


def distill_section(data: dict, figures: Figures, anchor: str) -> str:
    """metrics.jsonl over steps: the loss and its terms, the learning rate, tokens/s; the run's settings."""
    metrics = data["metrics"]
    parts = [f'<section id="{esc(anchor)}"><h2>Distillation: {esc(data["path"])}</h2>']
    if not metrics:
        return parts[0] + '<p class="note">metrics.jsonl has no step yet.</p></section>'
    last = metrics[-1]
    speeds = [row["tokens_per_s"] for row in metrics if isinstance(row.get("tokens_per_s"), (int, float))]
    parts.append(cards([("last step", last.get("step")), ("last loss", last.get("loss")),
                        ("tokens seen", last.get("tokens")), ("median tokens/s", sorted(speeds)[len(speeds) // 2]
                                                              if speeds else None)]))
    parts.append(figure(figures.losses(metrics, data["terms"]),
                        f"The loss and each term, as logged every few steps (metrics.jsonl, {len(metrics):,} lines).",
                        "losses"))
    parts.append('<div class="row">'
                 + figure(figures.series(metrics, "lr", "learning rate", "#3a7d44"), "Learning rate.", "lr")
                 + figure(figures.series(metrics, "tokens_per_s", "tokens / s", "#8e5ea2"),
                          "Throughput: non-[PAD] tokens per second over each logging window.", "tokens per second")
                 + "</div>")
    for name, config in data["configs"].items():
        scalars = [[key, value] for key, value in sorted(config.items()) if not isinstance(value, (dict, list))]
        nested = [[key, pretty(value)] for key, value in sorted(config.items()) if isinstance(value, (dict, list))]
        parts.append(f"<h4>{esc(name)}</h4>" + table(["setting", "value"], scalars)
                     + "".join(f'<p class="note"><b>{esc(key)}</b>: <code>{value}</code></p>' for key, value in nested))
    return "".join(parts) + "</section>"


EVALUATION_COLUMNS = (("masked_lm", "masked_tokens", "masked tokens"), ("masked_lm", "mlm_loss", "MLM loss"),
                      ("masked_lm", "perplexity", "perplexity"), ("masked_lm", "mlm_accuracy", "MLM accuracy"),
                      ("masked_lm", "teacher_agreement", "teacher agreement"),
                      ("sentiment", "examples", "sentiment examples"), ("sentiment", "accuracy", "sentiment accuracy"),
                      ("sentiment", "majority_baseline", "majority baseline"))


def evaluation_section(reports: list[dict], anchor: str) -> str:
    """distill.evaluate reports: a row per masked-LM / sentiment report, and for `--task` / `--suite`
    reports the seeds' results table (one row per report) with each task's runs and baselines."""
    checks = [data for data in reports if "masked_lm" in data["report"] or "sentiment" in data["report"]]
    suites = [data for data in reports if "tasks" in data["report"]]
    parts = [f'<section id="{esc(anchor)}"><h2>Evaluation</h2>']
    if checks:
        rows = [[data["path"], data["report"].get("model"), data["report"].get("split")]
                + [(data["report"].get(group) or {}).get(key) for group, key, _ in EVALUATION_COLUMNS]
                for data in checks]
        headers = ["report", "model", "split"] + [label for _, _, label in EVALUATION_COLUMNS]
        parts.append(table(headers, rows, numeric=set(range(3, len(headers))))
                     + '<p class="note">From distill.evaluate reports: MLM accuracy is top-1 at masked positions; '
                       "teacher agreement the share where student and teacher predict the same token.</p>")
    if suites:
        parts.append(task_tables(suites))
    return "".join(parts) + "</section>"


def task_tables(reports: list[dict]) -> str:
    """The seeds' table (distill.tasks.table's cells: percentages, mean ± std over seeds) and, below it,
    every task's examples, runs and the baselines scored on the same evaluation set."""
    from distill.tasks import TASKS
    from distill.tasks import table as seeds_table

    headers = ["model", "#Param"] + [task.column.replace("<br>", " ") for task in TASKS.values()]
    rows = [[data["report"].get("name") or data["report"].get("model"),
             seeds_table.parameters(data["report"].get("parameters"))]
            + [seeds_table.task_cell(data["report"]["tasks"].get(name)) for name in TASKS]
            for data in reports]
    details = []
    for data in reports:
        for name, result in data["report"]["tasks"].items():
            runs = len(result["runs"])
            scores = ", ".join(f"{metric} {seeds_table.cell(result['mean'][metric], result['std'][metric], runs)}"
                               for metric in result["primary"])
            best = ", ".join(f"{baseline['name']} " + " / ".join(
                seeds_table.cell(baseline["metrics"].get(metric), None, 1) for metric in result["primary"])
                for baseline in result.get("baselines", []))
            details.append([data["report"].get("name") or data["report"].get("model"), result.get("dataset", name),
                            result["examples"]["train"], result["examples"]["eval"], runs, scores, best])
    return ("<h3>Fine-tuning tasks</h3>" + table(headers, rows)
            + '<p class="note">As in the seeds\' results tables: percentages, mean ± standard deviation over the '
              "seeds (distill.evaluate --task / --suite); '-' marks a task not run.</p>"
            + table(["model", "task", "training examples", "evaluation examples", "runs", "score", "baselines"],
                    details, numeric={2, 3, 4})
            + '<p class="note">Baselines are scored on the same evaluation examples (docs/evaluate.md).</p>')
