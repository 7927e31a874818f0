"""The one I/O layer (transforms.storage): strict decompression, input listing rules, atomic writes, publishing."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest
import zstandard

from transforms import storage

CONTENT = "".join(f"{i}번째 댓글입니다 ㅋㅋ\n" for i in range(20_000)).encode("utf-8")
COMPRESSORS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_decompression_by_suffix_round_trips(tmp_path, suffix):
    path = tmp_path / f"comments.txt{suffix}"
    path.write_bytes(COMPRESSORS[suffix](CONTENT))
    with storage.open_decompressed(str(path)) as stream:
        assert stream.read() == CONTENT


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_truncated_compressed_file_raises_instead_of_ending_early(tmp_path, suffix):
    path = tmp_path / f"comments.txt{suffix}"
    compressed = COMPRESSORS[suffix](CONTENT)
    path.write_bytes(compressed[: len(compressed) // 2])
    read = bytearray()
    with pytest.raises((EOFError, OSError, lzma.LZMAError, zstandard.ZstdError)):
        with storage.open_decompressed(str(path)) as stream:
            while block := stream.read1(1 << 16) if hasattr(stream, "read1") else stream.read(1 << 16):
                read += block
    assert CONTENT.startswith(bytes(read)) and len(read) < len(CONTENT)  # what came before the damage is right


def test_two_zstd_frames_read_as_one_stream(tmp_path):
    path = tmp_path / "two.jsonl.zst"
    compressor = zstandard.ZstdCompressor()
    path.write_bytes(compressor.compress(b"first\n") + compressor.compress(b"second\n"))
    with storage.open_decompressed(str(path)) as stream:
        assert stream.read() == b"first\nsecond\n"


def test_uncompressed_bytes_are_not_touched_even_with_a_compression_like_name(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_bytes(CONTENT[:1000])
    with storage.open_decompressed(str(path)) as stream:
        assert stream.read() == CONTENT[:1000]


def write(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_list_inputs_globs_files_and_directories(tmp_path):
    a = write(tmp_path / "raw" / "2019" / "a.jsonl")
    b = write(tmp_path / "raw" / "2020" / "b.jsonl.gz", b"yy")
    c = write(tmp_path / "raw" / "c.txt")
    write(tmp_path / "raw" / ".hidden")
    write(tmp_path / "raw" / "_temporary" / "staged.txt")
    listed = lambda *patterns, **kw: [f.path for f in storage.list_inputs(list(patterns), **kw)]  # noqa: E731
    assert listed(str(tmp_path / "raw" / "*" / "*.jsonl*")) == [a, b]
    assert listed(str(tmp_path / "raw" / "**" / "b.*")) == [b]  # ** spans any depth
    assert listed(str(tmp_path / "raw"), directories="files") == [a, b, c]
    assert listed(c, a, c) == [a, c]  # sorted, without repeats
    assert [f.size for f in storage.list_inputs([b])] == [2]
    with pytest.raises(storage.StorageError, match="matches no file"):
        storage.list_inputs([str(tmp_path / "raw" / "*.csv")])
    with pytest.raises(storage.StorageError, match="no such file or directory"):
        storage.list_inputs([str(tmp_path / "missing.txt")])
    with pytest.raises(storage.StorageError, match="no such directory"):
        storage.list_inputs([str(tmp_path / "missing" / "*.txt")])


def test_a_directory_as_corpus_input(tmp_path):
    shard = write(tmp_path / "corpus" / "clean" / "part-00000-of-00001.parquet")
    write(tmp_path / "corpus" / "rejected" / "part-00000-of-00001.jsonl")
    with pytest.raises(storage.StorageError, match="unfinished pipeline.run output"):
        storage.list_inputs([str(tmp_path / "corpus")])
    write(tmp_path / "corpus" / "stats.json", b"{}")
    assert [f.path for f in storage.list_inputs([str(tmp_path / "corpus")])] == [shard]
    loose = write(tmp_path / "loose" / "a.parquet")
    assert [f.path for f in storage.list_inputs([str(tmp_path / "loose")])] == [loose]
    (tmp_path / "empty").mkdir()
    with pytest.raises(storage.StorageError, match="must hold Parquet shards"):
        storage.list_inputs([str(tmp_path / "empty")])


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    target = tmp_path / "deep" / "dir" / "doc.json"
    storage.write_json_atomic(str(target), {"b": 1, "a": "한글"})
    assert target.read_text(encoding="utf-8") == '{\n  "a": "한글",\n  "b": 1\n}\n'
    storage.write_json_atomic(str(target), {"b": 1, "a": 2}, sort_keys=False)
    assert json.loads(target.read_text()) == {"b": 1, "a": 2} and target.read_text().index('"b"') < target.read_text().index('"a"')
    assert sorted(p.name for p in target.parent.iterdir()) == ["doc.json"]

    with pytest.raises(TypeError):  # the write fails half way (here: not bytes at all)
        storage.write_bytes_atomic(str(target), object())
    assert json.loads(target.read_text()) == {"b": 1, "a": 2}  # the old file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["doc.json"]


def test_publish_moves_staged_files_and_replaces_only_what_is_named(tmp_path):
    output = tmp_path / "out"
    write(output / "stats.json", b"old marker")
    write(output / "clean" / "part-old.parquet", b"old")
    write(output / "notes.txt", b"user's")
    staging = storage.staging_dir(str(output))
    entries = [(write(tmp_path / "out" / "_temporary" / "clean" / "part-0.parquet", b"new"), "clean/part-0.parquet")]
    written = storage.publish(staging, str(output), entries, replaced=("clean",), marker="stats.json")
    assert written == ["clean/part-0.parquet"]
    assert storage.list_files(str(output), recursive=True) == ["clean/part-0.parquet", "notes.txt"]
    assert not storage.exists(staging)
    assert storage.file_sha256(str(output / "clean" / "part-0.parquet")) == (
        "11507a0e2f5e69d5dfa40a62a1bd7b6ee57e6bcd85c67c9b8431b36fff21c437")
