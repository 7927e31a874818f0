"""Exact deduplication of one partition's records, keeping the smallest id of each text."""
from __future__ import annotations

import numpy as np


def dedup_exact(columns: dict[str, list], drop_duplicates: bool = True) -> dict[str, list]:
    """Records sorted by (id, source, line); of each group of equal texts only the first survives.

    The survivor is therefore the record with the smallest id (ties broken by source file
    and line), whatever order the records arrived in. With `drop_duplicates=False` the
    records are only sorted. The sort runs in numpy on UTF-8 bytes, whose order is the
    strings' code-point order.
    """
    if not columns["id"]:
        return columns
    order = np.lexsort((np.asarray(columns["line"]),
                        np.array([source.encode("utf-8") for source in columns["source"]], dtype=np.bytes_),
                        np.array([record_id.encode("utf-8") for record_id in columns["id"]], dtype=np.bytes_)))
    if drop_duplicates:
        seen: set[str] = set()
        texts = columns["text"]
        order = [i for i in order.tolist() if not (texts[i] in seen or seen.add(texts[i]))]
    else:
        order = order.tolist()
    return {name: [values[i] for i in order] for name, values in columns.items()}
