"""bench.bench_distill_value: the verdict's arithmetic on a made-up outcome, and (slow) the whole chain at
the --quick size: corpus -> tokenizer -> shards -> teacher -> four students -> distill.evaluate --suite."""
from __future__ import annotations

import pytest

from bench import bench_distill_value as bench


def result(mean: float, std: float) -> dict:
    return {"mean": {"accuracy": mean, "spearman": mean}, "std": {"accuracy": std, "spearman": std},
            "baselines": [{"name": "majority", "metrics": {"accuracy": 0.5, "spearman": None}}], "runs": [{}, {}, {}]}


def outcome(scores: dict[str, tuple[float, float]]) -> dict:
    reports = {name: {"parameters": 1_000_000, "masked_lm": {"mlm_accuracy": 0.1},
                      "tasks": {task: result(*scores[name]) for task, _, _ in bench.TASKS}}
               for name in ("teacher", "scratch", *bench.OBJECTIVES)}
    size = {"teacher_steps": 10, "student_steps": 5, "teacher": {"layers": 4, "hidden": 128},
            "student": {"layers": 2, "hidden": 128}}
    metrics = {"teacher": {"mlm_cross_entropy": 6.5}, "scratch": {"mlm_cross_entropy": 7.1}}
    return {"reports": reports, "size": size, "metrics": metrics, "unigram_entropy": 7.18}


def test_verdict_counts_differences_beyond_the_spread():
    made_up = outcome({"teacher": (0.9, 0.0), "scratch": (0.60, 0.01), "minilm": (0.65, 0.01),
                       "minilmv2": (0.61, 0.01), "distilbert": (0.55, 0.02)})
    text = bench.verdict(made_up)
    assert text.startswith("**The claim (distilled > scratch at equal steps and data) holds only in part at this "
                           "size**: distilled beats scratch beyond the seeds' spread in 3 of 9 (objective, task) pairs.")
    assert "minilm vs scratch: NSMC held-out (acc) +5.00 (better, beyond the spread)" in text
    assert "minilmv2 vs scratch: NSMC held-out (acc) +1.00 (better, within the spread)" in text
    assert "distilbert vs scratch: NSMC held-out (acc) -5.00 (worse, beyond the spread)" in text
    assert bench.reading(made_up).startswith(
        "How to read it: a student can only inherit what its teacher knows beyond the student's own reach. The "
        "teacher ended its 10 steps at a masked-LM loss of 6.50 nats, the scratch student its 5 steps at 7.10 (the "
        "unigram entropy of the corpus, what frequencies alone give, is 7.18); fine-tuned, the teacher is, against "
        "the scratch student: NSMC held-out (acc) +30.00; ")
    rows = bench.table(made_up).splitlines()
    assert rows[2].startswith("| teacher (4x128, 1.0M) | masked LM, 10 steps | 10.0 | 90.00 ± 0.00 |")
    assert rows[-1] == "| baselines (no model) | | | 50.00 | undefined | 50.00 |"


def test_heldout_is_a_stable_hash_of_the_id():
    held = [review for review in (f"nsmc-{i}" for i in range(2000)) if bench.heldout(review, 25)]
    assert 50 < len(held) < 110 and held == [r for r in (f"nsmc-{i}" for i in range(2000)) if bench.heldout(r, 25)]


@pytest.mark.slow
def test_quick_size_runs_the_whole_chain(tmp_path):
    result = bench.run_size(bench.QUICK, tmp_path / "quick", None, lambda message: None)
    assert set(result["reports"]) == {"teacher", "scratch", *bench.OBJECTIVES}
    for report in result["reports"].values():
        assert set(report["tasks"]) == {"nsmc", "korsts", "kornli"}
        assert all(len(task["runs"]) == bench.QUICK.seeds for task in report["tasks"].values())
    assert result["metrics"]["teacher"]["step"] == bench.QUICK.teacher_steps
    assert result["metrics"]["minilm"]["step"] == result["metrics"]["scratch"]["step"] == bench.QUICK.student_steps
    section = bench.section(result, bench.gpu_note(False, None))
    assert "skipped, torch sees no CUDA device" in section and "| scratch (1x16" in section
