"""transforms.token_shards: shard files, memory mapping, and the checks load_manifest makes."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from transforms import storage
from transforms import token_shards as ts
from transforms.special_tokens import TOKENIZER_FILES

SEQ_LEN = 8


def _tokenizer_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n가\n나\n", encoding="utf-8")
    (path / "tokenizer.json").write_text('{"model": {"type": "WordPiece"}}', encoding="utf-8")
    (path / "tokenizer_report.json").write_text('{"seconds": 1.5}', encoding="utf-8")
    return path


def _rows(n: int, seed: int, high: int = 7) -> np.ndarray:
    rows = np.zeros((n, SEQ_LEN), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows[:, 0] = 2
    for i in range(n):
        used = int(rng.integers(1, SEQ_LEN - 1))
        rows[i, 1 : 1 + used] = rng.integers(5, high, used)
        rows[i, 1 + used] = 3
    return rows


@pytest.fixture()
def shard_dir(tmp_path: Path) -> Path:
    """A small, valid token shard directory built with write_shard (as pipeline.shard lays it out)."""
    root = tmp_path / "shards"
    shutil.copytree(_tokenizer_dir(tmp_path / "tok"), root / ts.TOKENIZER_SUBDIR)
    splits = {}
    for split, counts in (("train", (5, 3)), ("validation", (2,))):
        shards = []
        for index, n in enumerate(counts):
            file = f"{split}/shard-{index:05d}.arrow"
            sha, tokens = ts.write_shard(str(root / file), _rows(n, index), "uint16")
            shards.append({"file": file, "sequences": n, "tokens": tokens, "sha256": sha})
        splits[split] = {
            "sequences": sum(s["sequences"] for s in shards),
            "tokens": sum(s["tokens"] for s in shards),
            "documents": 0,
            "split_documents": 0,
            "shards": shards,
        }
    manifest = {
        "format": ts.FORMAT,
        "seq_len": SEQ_LEN,
        "packing": "concat",
        "dtype": "uint16",
        "vocab_size": 7,
        "special_tokens": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
        "tokenizer_fingerprint": ts.tokenizer_fingerprint(str(root / ts.TOKENIZER_SUBDIR)),
        "splits": splits,
        "options": {},
    }
    storage.write_json_atomic(str(root / ts.MANIFEST_NAME), manifest)
    return root


def _edit_manifest(root: Path, edit) -> None:
    path = root / ts.MANIFEST_NAME
    manifest = json.loads(path.read_text(encoding="utf-8"))
    edit(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")


def test_narrowest_dtype_boundaries():
    assert ts.narrowest_dtype(30000) == "uint16"
    assert ts.narrowest_dtype(65536) == "uint16"  # ids 0..65535
    assert ts.narrowest_dtype(65537) == "uint32"
    with pytest.raises(ts.TokenShardError):
        ts.narrowest_dtype(0)


@pytest.mark.parametrize("dtype, high", [("uint16", 65536), ("uint32", 1 << 20)])
def test_write_and_open_round_trip(tmp_path: Path, dtype: str, high: int):
    rows = _rows(6, 1, high=high)
    path = tmp_path / "a" / "shard-00000.arrow"
    sha, tokens = ts.write_shard(str(path), rows, dtype)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tokens == int(np.count_nonzero(rows))
    assert sorted(p.name for p in path.parent.iterdir()) == ["shard-00000.arrow"]  # no temp file left behind
    opened = ts.open_shard(str(path))
    assert opened.dtype == np.dtype(dtype) and opened.shape == (6, SEQ_LEN)
    np.testing.assert_array_equal(opened, rows)
    field = pa.ipc.open_file(pa.memory_map(str(path))).schema.field(ts.COLUMN)
    assert field.type == pa.list_(pa.uint16() if dtype == "uint16" else pa.uint32(), SEQ_LEN)


def test_write_shard_is_deterministic_and_refuses_out_of_range_ids(tmp_path: Path):
    rows = _rows(4, 2)
    first = ts.write_shard(str(tmp_path / "x.arrow"), rows, "uint16")
    assert ts.write_shard(str(tmp_path / "y.arrow"), rows, "uint16") == first
    assert (tmp_path / "x.arrow").read_bytes() == (tmp_path / "y.arrow").read_bytes()
    rows[0, 1] = 70000
    with pytest.raises(ts.TokenShardError, match="outside the range of uint16"):
        ts.write_shard(str(tmp_path / "z.arrow"), rows, "uint16")
    assert not (tmp_path / "z.arrow").exists()


def test_open_shard_is_a_zero_copy_memory_map(shard_dir: Path):
    path = shard_dir / "train" / "shard-00000.arrow"
    rows = ts.open_shard(str(path))
    assert not rows.flags.writeable and not rows.flags.owndata
    address = rows.ctypes.data
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high:
            mapped.append(rest[-1] if len(rest) == 5 else "")
    assert mapped == [str(path.resolve())]  # the array's bytes are the file's pages


def test_fingerprint_covers_defining_files_only(tmp_path: Path):
    tok = _tokenizer_dir(tmp_path / "tok")
    before = ts.tokenizer_fingerprint(str(tok))
    assert before.startswith("sha256:") and len(before) == len("sha256:") + 64
    (tok / "tokenizer_report.json").write_text('{"seconds": 2.0}', encoding="utf-8")
    assert ts.tokenizer_fingerprint(str(tok)) == before
    (tok / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n가\n다\n", encoding="utf-8")
    assert ts.tokenizer_fingerprint(str(tok)) != before
    with pytest.raises(ts.TokenShardError, match="no tokenizer files"):
        ts.tokenizer_fingerprint(str(tmp_path))


def test_fingerprint_is_over_the_four_tokenizer_files(tmp_path: Path):
    """The set is transforms.special_tokens.TOKENIZER_FILES; changing it would orphan every manifest written so far."""
    assert sorted(TOKENIZER_FILES) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    tok = tmp_path / "tok"
    tok.mkdir()
    for name in TOKENIZER_FILES:
        (tok / name).write_bytes(name.upper().encode())
    digest = hashlib.sha256()
    for name in sorted(TOKENIZER_FILES):
        digest.update(name.encode() + b"\0" + len(name).to_bytes(8, "little") + name.upper().encode())
    assert ts.tokenizer_fingerprint(str(tok)) == "sha256:" + digest.hexdigest()


def test_load_manifest_accepts_a_valid_directory(shard_dir: Path):
    manifest = ts.load_manifest(str(shard_dir))
    assert manifest["splits"]["train"]["sequences"] == 8
    paths = ts.shard_paths(str(shard_dir), "train", manifest)
    assert paths == [str(shard_dir / "train" / "shard-00000.arrow"), str(shard_dir / "train" / "shard-00001.arrow")]
    assert sum(len(ts.open_shard(p)) for p in paths) == 8
    with pytest.raises(ts.TokenShardError, match="no split 'test'"):
        ts.shard_paths(str(shard_dir), "test", manifest)


def test_load_manifest_refuses_a_directory_without_manifest(shard_dir: Path):
    (shard_dir / ts.MANIFEST_NAME).unlink()
    with pytest.raises(ts.TokenShardError, match="no manifest.json"):
        ts.load_manifest(str(shard_dir), verify=False)


def test_load_manifest_refuses_a_corrupt_shard(shard_dir: Path):
    path = shard_dir / "train" / "shard-00001.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert ts.load_manifest(str(shard_dir), verify=False)["seq_len"] == SEQ_LEN  # only verify reads the bytes
    with pytest.raises(ts.TokenShardError, match="checksum mismatch for train/shard-00001.arrow"):
        ts.load_manifest(str(shard_dir))


def test_load_manifest_refuses_a_missing_shard(shard_dir: Path):
    (shard_dir / "validation" / "shard-00000.arrow").unlink()
    with pytest.raises(ts.TokenShardError, match="validation/shard-00000.arrow listed in the manifest is missing"):
        ts.load_manifest(str(shard_dir))


def test_load_manifest_refuses_another_tokenizer(shard_dir: Path):
    vocab = shard_dir / ts.TOKENIZER_SUBDIR / "vocab.txt"
    vocab.write_text(vocab.read_text(encoding="utf-8") + "다\n", encoding="utf-8")
    with pytest.raises(ts.TokenShardError, match="tokenizer fingerprint mismatch"):
        ts.load_manifest(str(shard_dir))


@pytest.mark.parametrize("bad", ["../outside.arrow", "/etc/passwd", "train/../../x.arrow", "gs://bucket/x.arrow", ""])
def test_load_manifest_refuses_paths_that_escape(shard_dir: Path, bad: str):
    def edit(manifest):
        manifest["splits"]["train"]["shards"][0]["file"] = bad

    _edit_manifest(shard_dir, edit)
    with pytest.raises(ts.TokenShardError, match="relative path|escapes the shard directory"):
        ts.load_manifest(str(shard_dir), verify=False)


def test_load_manifest_refuses_inconsistent_counts_and_formats(shard_dir: Path):
    _edit_manifest(shard_dir, lambda m: m["splits"]["validation"].update(sequences=3))
    with pytest.raises(ts.TokenShardError, match="split 'validation' says sequences=3 but its shards add up to 2"):
        ts.load_manifest(str(shard_dir), verify=False)
    _edit_manifest(shard_dir, lambda m: m.update(format="something-else/2"))
    with pytest.raises(ts.TokenShardError, match="format"):
        ts.load_manifest(str(shard_dir), verify=False)
    (shard_dir / ts.MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ts.TokenShardError, match="not valid JSON"):
        ts.load_manifest(str(shard_dir), verify=False)


def test_open_shard_refuses_other_files(tmp_path: Path):
    path = tmp_path / "not-arrow.arrow"
    path.write_bytes(b"hello")
    with pytest.raises(ts.TokenShardError, match="not a readable Arrow IPC file"):
        ts.open_shard(str(path))
    table = pa.table({"text": ["a", "b"]})
    with pa.ipc.new_file(str(tmp_path / "other.arrow"), table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(ts.TokenShardError, match="expected one column 'input_ids'"):
        ts.open_shard(str(tmp_path / "other.arrow"))
