"""Exact deduplication of one partition's records, keeping the smallest id of each text."""
from __future__ import annotations


def dedup_exact(columns: dict[str, list], drop_duplicates: bool = True) -> dict[str, list]:
    """Records sorted by (id, source, line); of each group of equal texts only the first survives.

    The survivor is therefore the record with the smallest id (ties broken by source file
    and line), whatever order the records arrived in. With `drop_duplicates=False` the
    records are only sorted.
    """
    order = sorted(range(len(columns["id"])),
                   key=lambda i: (columns["id"][i], columns["source"][i], columns["line"][i]))
    if drop_duplicates:
        seen: set[str] = set()
        texts = columns["text"]
        survivors = []
        for i in order:
            if texts[i] not in seen:
                seen.add(texts[i])
                survivors.append(i)
        order = survivors
    return {name: [values[i] for i in order] for name, values in columns.items()}
