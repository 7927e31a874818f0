"""The baseline every pipeline benchmark is measured against: the seed's clean in a plain loop.

One process, one core: read the JSON lines (any compression Python's openers know), clean
with the seed's clean(), drop texts shorter than 10 characters, keep the first of each
exact duplicate, write one Parquet file. `python -m bench.baseline_loop INPUT OUTPUT.parquet`.
"""
import bz2
import gzip
import json
import lzma
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from bench.seed_clean import clean

OPENERS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


def main(input_path: str, output_path: str) -> None:
    opener = next((o for suffix, o in OPENERS.items() if input_path.endswith(suffix)), open)
    ids, texts, seen = [], [], set()
    with opener(input_path, "rb") as handle:
        for line in handle:
            record = json.loads(line)
            text = clean(record["text"])
            if len(text) < 10 or text in seen:
                continue
            seen.add(text)
            ids.append(record["id"])
            texts.append(text)
    pq.write_table(pa.table({"id": ids, "text": texts}), output_path, compression="zstd")
    print(len(ids))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
