"""Issue 13: `pipeline.run`'s near dedup against an exact ground truth, on natural NSMC and with planted copies.

For each data set, `pipeline.run --no-near-dedup` gives the texts near dedup sees (cleaned,
length-filtered, exact duplicates removed). The ground truth is every pair of them at
exact Jaccard >= 0.8 over the pipeline's shingles (`exact_similar_pairs`, which
tests/test_components.py checks against brute force); its connected components would
remove all but the smallest id of each. Then the command itself runs, verified (the
default) and with --no-verify, both with --write-clusters, and its output is scored:
removed-record precision and recall against the ground truth, and the share of removed
records that have no partner at J >= 0.8 in their own cluster (a removal nothing justifies).

Data sets: all 297,192 NSMC reviews as they are (natural: no planting), and the same plus
PLANTED lightly edited copies of random reviews (bench_near_dedup.light_edit, one edit per
40 characters, at least one). Called from bench/bench_near_dedup.py (`truth_section`); on
its own: `python -m bench.near_dedup_truth` prints the section.
"""
from __future__ import annotations

import json
import lzma
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bench.bench_clean import python_cmd
from bench.common import NSMC_PATH, WORK_DIR, timed_subprocess
from transforms.clean import clean_text
from transforms.components import connected_components
from transforms.minhash import shingle_table

THRESHOLD = 0.8
PLANTED = 20_000
SEED = 0
PRECISION_TARGET, RECALL_TARGET = 0.99, 0.97


def write_natural(data_path: Path, target: Path) -> int:
    """NSMC as uncompressed JSON lines, unchanged."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(data_path, "rt", encoding="utf-8") as handle, open(target, "w", encoding="utf-8") as out:
        lines = sum(out.write(line) > 0 for line in handle)
    return lines


def write_planted(data_path: Path, target: Path, count: int, seed: int) -> int:
    """NSMC plus `count` edited copies of random reviews (ids `<id>-p`), as JSON lines: the number of copies."""
    from bench.bench_near_dedup import MIN_LENGTH, light_edit

    with lzma.open(data_path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    rng = random.Random(seed)
    cleaned = {}
    for index in rng.sample(range(len(records)), len(records)):
        text = clean_text(records[index]["text"])
        if len(text) >= MIN_LENGTH:
            cleaned[index] = text
        if len(cleaned) == count:
            break
    alphabet = "".join(cleaned.values())
    copies = []
    for index, text in cleaned.items():
        for _ in range(1 + len(text) // 40):
            text = light_edit(text, rng, alphabet)
        copies.append({**records[index], "id": f"{records[index]['id']}-p", "text": text})
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8") as out:
        for record in records + copies:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(copies)


def run_command(data: Path, out: Path, *options: str) -> tuple[float, float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    wall, peak, _ = timed_subprocess(python_cmd("-m", "pipeline.run", "--input", str(data), "--output", str(out),
                                                "--quiet", *options))
    return wall, peak, json.loads((out / "stats.json").read_text())


def read_ids(directory: Path, columns=("id",)) -> dict[str, list]:
    table = pq.read_table(sorted((directory / "clean").glob("*.parquet")), columns=list(columns))
    return table.to_pydict()


def ground_truth(universe: Path) -> dict:
    """The texts near dedup sees, in id order, and every pair of them at J >= THRESHOLD."""
    from bench.bench_near_dedup import exact_similar_pairs

    columns = read_ids(universe, ("id", "text"))
    order = sorted(range(len(columns["id"])), key=columns["id"].__getitem__)  # str order = UTF-8 byte order
    ids = [columns["id"][i] for i in order]
    texts = [columns["text"][i] for i in order]
    pairs, _ = exact_similar_pairs(*shingle_table(texts, 2), THRESHOLD)
    nodes, representatives = connected_components(pairs)
    removed = np.zeros(len(ids), bool)
    removed[nodes[nodes != representatives]] = True
    return {"ids": ids, "index": {record_id: i for i, record_id in enumerate(ids)}, "pairs": pairs,
            "removed": removed}


def score(truth: dict, out: Path) -> dict:
    """Removed-record precision and recall, and removals without a partner at J >= THRESHOLD in their cluster."""
    n = len(truth["ids"])
    kept = np.zeros(n, bool)
    kept[[truth["index"][record_id] for record_id in read_ids(out)["id"]]] = True
    removed = ~kept
    cluster = np.full(n, -1, np.int64)
    clusters = pq.read_table(sorted((out / "clusters").glob("*.parquet"))).to_pydict()
    names = {}
    for record_id, cluster_id in zip(clusters["id"], clusters["cluster_id"]):
        cluster[truth["index"][record_id]] = names.setdefault(cluster_id, len(names))
    first, second = truth["pairs"][:, 0], truth["pairs"][:, 1]
    together = (cluster[first] >= 0) & (cluster[first] == cluster[second])
    partnered = np.zeros(n, bool)
    partnered[first[together]] = partnered[second[together]] = True
    hit = int((removed & truth["removed"]).sum())
    sizes = np.bincount(cluster[cluster >= 0]) if (cluster >= 0).any() else np.zeros(1, np.int64)
    return {"removed": int(removed.sum()), "precision": hit / max(int(removed.sum()), 1),
            "recall": hit / max(int(truth["removed"].sum()), 1), "partnerless": int((removed & ~partnered).sum()),
            "largest": int(sizes.max())}


def truth_rows(data_path: Path, workdir: Path) -> tuple[str, dict]:
    """The Markdown section, and the scores (for the summary line of bench_near_dedup)."""
    workdir.mkdir(parents=True, exist_ok=True)
    natural, planted = workdir / "nsmc-natural.jsonl", workdir / "nsmc-planted.jsonl"
    records = write_natural(data_path, natural)
    copies = write_planted(data_path, planted, PLANTED, SEED)
    rows, verdicts, scores = [], [], {}
    truths = []
    for name, data in (("natural", natural), (f"planted (+{copies:,} copies)", planted)):
        run_command(data, workdir / "universe", "--no-near-dedup")
        truth = ground_truth(workdir / "universe")
        truths.append(f"{name}: {len(truth['ids']):,} texts after exact dedup, {len(truth['pairs']):,} pairs at "
                      f"J >= {THRESHOLD}, {int(truth['removed'].sum()):,} removals")
        for label, options in (("verified (default)", []), ("`--no-verify`", ["--no-verify"])):
            wall, peak, stats = run_command(data, workdir / "run", "--write-clusters", *options)
            result = score(truth, workdir / "run")
            scores[(name, label)] = result
            near = stats["near_dedup"]
            checked = (f"{near['candidate_pairs']:,} | {near['verified_pairs']:,} | {near['rejected_pairs']:,}"
                       if near["verify"] else f"{near['candidate_pairs']:,} | – | –")
            rows.append(f"| {name} | {label}: {near['bands']}×{near['rows']} | {checked} | {near['clusters']:,} "
                        f"({result['largest']}) | {result['removed']:,} | {result['precision']:.3f} | "
                        f"{result['recall']:.3f} | {result['partnerless']:,} "
                        f"({result['partnerless'] / max(result['removed'], 1):.1%}) | {wall:.1f} | {peak:,.0f} |")
            if not options:
                met = (result["precision"] >= PRECISION_TARGET and result["recall"] >= RECALL_TARGET
                       and result["partnerless"] == 0)
                verdicts.append(f"{name}: precision {result['precision']:.3f}, recall {result['recall']:.3f}, "
                                f"{result['partnerless']} without a partner: **{'met' if met else 'NOT met'}**")
    shutil.rmtree(workdir / "run", ignore_errors=True)
    shutil.rmtree(workdir / "universe", ignore_errors=True)
    return f"""### Quality of `pipeline.run` against an exact ground truth (natural and planted)

The command itself on all {records:,} NSMC reviews as they are (natural: no planting), and on
the same plus {copies:,} lightly edited copies of random reviews (1 + len/40 random edits each,
as in the quality table above; ids `<id>-p`). For each data set, `pipeline.run
--no-near-dedup` gives the texts near dedup sees; the ground truth is every pair of them at
exact Jaccard >= {THRESHOLD} (character 2-grams, whitespace removed: the pipeline's shingles), by
the prefix-filter join that tests/test_components.py checks against brute force, and its
components would remove all but the smallest id of each:

- {truths[0]};
- {truths[1]}.

Then `pipeline.run --write-clusters`, verified (the default) and with `--no-verify`. Removed
precision: share of the removed records the ground truth also removes; recall: share of the
ground-truth removals made. *Without a partner*: removed records that have no other member
of their own output cluster at exact J >= {THRESHOLD} (a removal nothing justifies). Clusters:
how many, and (in brackets) the largest. Wall time and peak memory: the whole command.

| data | run: bands×rows | candidate pairs | verified | rejected | clusters (largest) | removed | removed precision | removed recall | removed without a partner | wall s | peak MiB |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Targets for the default (precision >= {PRECISION_TARGET}, recall >= {RECALL_TARGET}, no removal without a partner):
{chr(10).join(f"- {verdict}" for verdict in verdicts)}
""", scores


if __name__ == "__main__":
    print(truth_rows(NSMC_PATH, WORK_DIR / "near_dedup_truth")[0])
