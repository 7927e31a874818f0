"""The seeds' results table: one Markdown row per model, metrics as percentages, mean ± std over runs.

Columns in the order of KoMiniLM's and LM-kor's tables (shared/seeds 000, 003): #Param, NSMC (Acc),
Naver NER (F1), PAWS (Acc), KorNLI (Acc), KorSTS (Spearman), Question Pair (Acc), KorQuAD (Dev)
(EM/F1), Korean Hate Speech (Dev) (F1). A task that was not run shows `-`. See docs/evaluate.md#the-table.
"""
from __future__ import annotations

from distill.tasks import TASKS


def header() -> str:
    return "| Model | #Param | " + " | ".join(task.column for task in TASKS.values()) + " |"


def separator() -> str:
    return "|" + "|".join([":----"] + [":----:"] * (1 + len(TASKS))) + "|"


def parameters(count: int | None) -> str:
    if not count:
        return "-"
    return f"{count / 1e6:.0f}M" if count >= 10e6 else f"{count / 1e6:.1f}M"


def cell(mean: float | None, std: float | None, runs: int) -> str:
    if mean is None:
        return "n/a"
    text = f"{100 * mean:.2f}"
    return text + (f"±{100 * std:.2f}" if runs > 1 and std is not None else "")


def task_cell(result: dict | None) -> str:
    if result is None:
        return "-"
    runs = len(result["runs"])
    return " / ".join(cell(result["mean"][name], result["std"][name], runs) for name in result["primary"])


def row(name: str, results: dict[str, dict], parameter_count: int | None) -> str:
    cells = [name, parameters(parameter_count)] + [task_cell(results.get(task)) for task in TASKS]
    return "| " + " | ".join(cells) + " |"
