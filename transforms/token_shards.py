"""Token shards on disk (`koforge-token-shards/1`): the Arrow IPC files and manifest.json of pipeline.shard.

Layout (docs/formats.md#token-shards-koforge-token-shards1): `DIR/manifest.json` (written
last), `DIR/tokenizer/` (a copy of the tokenizer files), `DIR/train/shard-XXXXX.arrow` and
`DIR/validation/shard-XXXXX.arrow`.
Each shard is an Arrow IPC *file* holding one record batch with one column `input_ids`
of type fixed_size_list<uint16|uint32>[seq_len]; rows are `[CLS] ... [SEP]` padded with
[PAD] at the end.

Readers go through `load_manifest`, which refuses a directory that is incomplete
(no manifest), damaged (missing shard, checksum mismatch), made with another tokenizer
(fingerprint mismatch) or whose manifest points outside the directory: a clear
`TokenShardError` up front instead of a crash deep inside training.

Paths are local paths or URIs that `pyarrow.fs` understands (`gs://`, `s3://`, `file://`);
`open_shard` memory-maps, so it needs a local file.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from transforms.special_tokens import TOKENIZER_FILES
from transforms.storage import file_sha256, join, resolve, write_bytes_atomic

FORMAT = "koforge-token-shards/1"
MANIFEST_NAME = "manifest.json"
TOKENIZER_SUBDIR = "tokenizer"
SPLITS = ("train", "validation")
COLUMN = "input_ids"
DTYPES = {"uint16": (np.uint16, pa.uint16()), "uint32": (np.uint32, pa.uint32())}


class TokenShardError(ValueError):
    """A token shard directory (or a file in it) is missing, damaged or inconsistent."""


def narrowest_dtype(vocab_size: int) -> str:
    """'uint16' when every id < vocab_size fits in 16 bits, else 'uint32'."""
    if vocab_size < 1:
        raise TokenShardError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= 1 << 16:
        return "uint16"
    if vocab_size <= 1 << 32:
        return "uint32"
    raise TokenShardError(f"vocab_size {vocab_size} does not fit in uint32")


def tokenizer_fingerprint(tokenizer_dir: str) -> str:
    """'sha256:<hex>' over the names and bytes of the tokenizer's defining files, sorted by name.

    Each file contributes its name, a NUL, its length as 8 little-endian bytes and its bytes,
    so no two different sets of files hash the same way by concatenation.
    """
    fs, base = resolve(tokenizer_dir)
    digest = hashlib.sha256()
    found = 0
    for name in sorted(TOKENIZER_FILES):  # tokenizer_report.json is copied along but left out
        path = join(base, name)
        if fs.get_file_info(path).type != pafs.FileType.File:
            continue
        with fs.open_input_stream(path) as handle:
            data = handle.read()
        digest.update(name.encode("utf-8") + b"\0" + len(data).to_bytes(8, "little") + data)
        found += 1
    if not found:
        raise TokenShardError(f"{tokenizer_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    return "sha256:" + digest.hexdigest()


def shard_schema(seq_len: int, dtype: str) -> pa.Schema:
    """One non-null column `input_ids`: fixed_size_list<dtype>[seq_len]."""
    return pa.schema([pa.field(COLUMN, pa.list_(DTYPES[dtype][1], seq_len), nullable=False)])


def write_shard(path: str, sequences: np.ndarray, dtype: str, pad_id: int = 0) -> tuple[str, int]:
    """Write sequences [n, seq_len] as an Arrow IPC file, atomically; return (sha256, n_tokens).

    The file appears under its final name only once complete (temp name + rename).
    n_tokens counts the ids that are not `pad_id` ([PAD] is 0 in koforge-tokenizer/1).
    """
    if dtype not in DTYPES:
        raise TokenShardError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    sequences = np.asarray(sequences)
    if sequences.ndim != 2 or sequences.shape[1] < 1:
        raise TokenShardError(f"sequences must have shape [n, seq_len], got {sequences.shape}")
    np_type, arrow_type = DTYPES[dtype]
    if sequences.size and (sequences.min() < 0 or sequences.max() > np.iinfo(np_type).max):
        raise TokenShardError(f"token ids outside the range of {dtype}")
    n, seq_len = sequences.shape
    flat = pa.array(np.ascontiguousarray(sequences, dtype=np_type).reshape(-1), type=arrow_type)
    batch = pa.record_batch([pa.FixedSizeListArray.from_arrays(flat, seq_len)], schema=shard_schema(seq_len, dtype))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    data = sink.getvalue()
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest(), int(np.count_nonzero(sequences != pad_id))


def _safe_relative(shard_dir: str, relative: object) -> str:
    """The joined path of a manifest entry, refusing anything that could leave shard_dir."""
    if not isinstance(relative, str) or not relative:
        raise TokenShardError(f"{shard_dir}: manifest file entry {relative!r} is not a relative path")
    parts = relative.split("/")
    if (
        relative.startswith("/")
        or "\\" in relative
        or "://" in relative
        or (len(relative) > 1 and relative[1] == ":")
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise TokenShardError(f"{shard_dir}: manifest file entry {relative!r} escapes the shard directory")
    return join(shard_dir, relative)


def _check_structure(shard_dir: str, manifest: dict) -> None:
    if manifest.get("format") != FORMAT:
        raise TokenShardError(f"{shard_dir}: manifest format {manifest.get('format')!r} is not {FORMAT!r}")
    missing = [key for key in ("seq_len", "dtype", "vocab_size", "special_tokens", "tokenizer_fingerprint", "splits")
               if key not in manifest]
    if missing:
        raise TokenShardError(f"{shard_dir}: manifest lacks {', '.join(missing)}")
    if manifest["dtype"] not in DTYPES:
        raise TokenShardError(f"{shard_dir}: manifest dtype {manifest['dtype']!r} is not one of {sorted(DTYPES)}")
    for split, info in manifest["splits"].items():
        shards = info.get("shards", [])
        for entry in shards:
            _safe_relative(shard_dir, entry.get("file"))
        for key in ("sequences", "tokens"):
            total = sum(entry[key] for entry in shards)
            if total != info.get(key):
                raise TokenShardError(
                    f"{shard_dir}: split {split!r} says {key}={info.get(key)} but its shards add up to {total}"
                )


def load_manifest(shard_dir: str, verify: bool = True) -> dict:
    """Read and check DIR/manifest.json; return it as a dict.

    Always checks the format, that every shard path stays inside the directory and that the
    per-split counts add up. With verify=True also checks that every shard exists with the
    recorded sha256 and that DIR/tokenizer/ has the recorded tokenizer fingerprint.
    """
    fs, base = resolve(shard_dir)
    manifest_path = join(base, MANIFEST_NAME)
    if fs.get_file_info(manifest_path).type != pafs.FileType.File:
        raise TokenShardError(
            f"{shard_dir}: no {MANIFEST_NAME}; the directory is not a finished token shard directory "
            "(pipeline.shard writes the manifest last, so an interrupted run leaves none)"
        )
    with fs.open_input_stream(manifest_path) as handle:
        try:
            manifest = json.loads(handle.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TokenShardError(f"{shard_dir}: {MANIFEST_NAME} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict):
        raise TokenShardError(f"{shard_dir}: {MANIFEST_NAME} is not a JSON object")
    _check_structure(shard_dir, manifest)
    if verify:
        for split, info in manifest["splits"].items():
            for entry in info.get("shards", []):
                path = _safe_relative(shard_dir, entry["file"])
                if fs.get_file_info(resolve(path)[1]).type != pafs.FileType.File:
                    raise TokenShardError(f"{shard_dir}: shard {entry['file']} listed in the manifest is missing")
                actual = file_sha256(path)
                if actual != entry.get("sha256"):
                    raise TokenShardError(
                        f"{shard_dir}: checksum mismatch for {entry['file']} "
                        f"(manifest {entry.get('sha256')}, file {actual}); the shard is corrupt or was replaced"
                    )
        fingerprint = tokenizer_fingerprint(join(shard_dir, TOKENIZER_SUBDIR))
        if fingerprint != manifest["tokenizer_fingerprint"]:
            raise TokenShardError(
                f"{shard_dir}: tokenizer fingerprint mismatch (manifest {manifest['tokenizer_fingerprint']}, "
                f"{TOKENIZER_SUBDIR}/ {fingerprint}); the shards were made with another tokenizer"
            )
    return manifest


def shard_paths(shard_dir: str, split: str, manifest: dict) -> list[str]:
    """Full paths of a split's shards, in manifest order."""
    if split not in manifest["splits"]:
        raise TokenShardError(f"{shard_dir}: no split {split!r} (have {sorted(manifest['splits'])})")
    return [_safe_relative(os.fspath(shard_dir), entry["file"]) for entry in manifest["splits"][split]["shards"]]


def open_shard(path: str) -> np.ndarray:
    """The shard's sequences as a read-only [n, seq_len] array backed by a memory map (no copy)."""
    path = os.fspath(path)
    if "://" in path:
        raise TokenShardError(f"{path}: open_shard memory-maps local files; copy the shard to local disk first")
    try:
        reader = pa.ipc.open_file(pa.memory_map(path, "r"))
    except (OSError, pa.ArrowInvalid) as err:
        raise TokenShardError(f"{path}: not a readable Arrow IPC file: {err}") from err
    field = reader.schema.field(COLUMN) if COLUMN in reader.schema.names else None
    if field is None or not pa.types.is_fixed_size_list(field.type):
        raise TokenShardError(f"{path}: expected one column {COLUMN!r} of fixed_size_list, got {reader.schema}")
    if reader.num_record_batches != 1:
        raise TokenShardError(f"{path}: expected one record batch, found {reader.num_record_batches}")
    column = reader.get_batch(0).column(COLUMN)
    values = column.flatten().to_numpy(zero_copy_only=True)
    return values.reshape(len(column), field.type.list_size)
