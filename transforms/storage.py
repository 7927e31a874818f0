"""The one I/O layer: paths, input listing, strict decompression, atomic writes, staging and publishing.

Every command and stage reads and writes through this module, on `pyarrow.fs`: a local path
and a `gs://` or `s3://` URI work alike, with pyarrow's own cloud clients (no Beam
FileSystems, no second client library). Decompression goes by file suffix through decoders
that raise on a truncated stream (gzip, bz2, xz and our zstd reader): a cut-short download
must become a counted `read_error`, never a silently shorter corpus.

smart-open was evaluated for the opening and decompression and is not used: its zstd path
needs an extra package (`backports.zstd` before Python 3.14) and its gs:// and s3:// transports
need google-cloud-storage and boto3, which pyarrow.fs already covers.

Outputs appear atomically: a file is written under a temporary name and renamed; a
directory output is staged in `DIR/_temporary/` and moved into place by `publish`, and its
completion marker (stats.json, manifest.json, ...) is written last, so a directory with its
marker is complete and one without it is not.
"""
from __future__ import annotations

import bz2
import fnmatch
import gzip
import hashlib
import io
import json
import lzma
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow.fs as pafs

COMPRESSION_SUFFIXES = (".gz", ".gzip", ".bz2", ".zst", ".zstd", ".xz", ".lzma")
READ_CHUNK_BYTES = 1 << 20
GLOB_CHARS = "*?["
STAGING_DIR = "_temporary"  # every command stages its output directory here
CORPUS_MARKER = "stats.json"  # pipeline.run writes it last: a clean corpus directory without it is unfinished
CORPUS_SHARDS = "clean"  # the clean corpus's Parquet shards, DIR/clean/*.parquet


class StorageError(ValueError):
    """A path cannot be listed, read or written as asked; the message names the path."""


# ---------------------------------------------------------------- paths


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it, for a local path or a URI."""
    path = os.fspath(path)
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    """Join with '/', which is right for URIs and for local paths on POSIX."""
    return posixpath.join(os.fspath(base), *parts)


def absolute(path: str) -> str:
    """A URI unchanged, a local path made absolute (workers may run in another directory)."""
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)


def is_remote(path: str) -> bool:
    return "://" in os.fspath(path) and not os.fspath(path).startswith("file://")


def kind(path: str) -> pafs.FileType:
    fs, inner = resolve(path)
    return fs.get_file_info(inner).type


def exists(path: str) -> bool:
    """A file, or a directory (on gs:// and s3:// a directory is a key prefix with something under it)."""
    return kind(path) != pafs.FileType.NotFound


def is_file(path: str) -> bool:
    return kind(path) == pafs.FileType.File


def is_dir(path: str) -> bool:
    return kind(path) == pafs.FileType.Directory


def list_files(directory: str, recursive: bool = False) -> list[str]:
    """The regular files under a directory, as paths relative to it, sorted; [] when it does not exist."""
    fs, inner = resolve(directory)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return []
    root = inner.rstrip("/") + "/"
    return sorted(info.path[len(root):] for info in fs.get_file_info(pafs.FileSelector(inner, recursive=recursive))
                  if info.type == pafs.FileType.File)


# ---------------------------------------------------------------- reading


def open_input(path: str) -> BinaryIO:
    """The raw bytes of a file, streamed."""
    fs, inner = resolve(path)
    return fs.open_input_stream(inner, compression=None)  # pyarrow would decompress by suffix, not strictly


def open_random_access(path: str):
    """A seekable handle (Parquet footers, row groups)."""
    fs, inner = resolve(path)
    return fs.open_input_file(inner)


def read_bytes(path: str) -> bytes:
    with open_input(path) as handle:
        return handle.read()


def read_json(path: str) -> object:
    return json.loads(read_bytes(path).decode("utf-8"))


def is_compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSION_SUFFIXES)


def strip_compression_suffix(name: str) -> str:
    lowered = name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


class _ZstdReader(io.RawIOBase):
    """A zstd stream (one or more frames) that raises EOFError when the last frame is cut short."""

    def __init__(self, raw: BinaryIO):
        import zstandard

        self._raw, self._new = raw, zstandard.ZstdDecompressor().decompressobj
        self._decompressor, self._buffer, self._frame_open = self._new(), b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            chunk = self._raw.read(READ_CHUNK_BYTES)
            if not chunk:
                if self._frame_open:
                    raise EOFError("zstd stream ended before the end of its frame")
                return 0
            while chunk:
                self._frame_open = True
                self._buffer += self._decompressor.decompress(chunk)
                chunk = b""
                if self._decompressor.eof:
                    chunk, self._decompressor, self._frame_open = self._decompressor.unused_data, self._new(), False
        size = min(len(target), len(self._buffer))
        target[:size], self._buffer = self._buffer[:size], self._buffer[size:]
        return size


def decompressed(raw: BinaryIO, path: str) -> BinaryIO:
    """Decompress by file suffix with decoders that raise on truncated input.

    (Beam's and Python's convenience readers differ here: Beam's gzip reader ends a cut-short
    file silently, which would lose records without a count.)
    """
    name = path.lower()
    if name.endswith((".gz", ".gzip")):
        return gzip.GzipFile(fileobj=raw)
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw)
    if name.endswith((".xz", ".lzma")):
        return lzma.LZMAFile(raw)
    if name.endswith((".zst", ".zstd")):
        return io.BufferedReader(_ZstdReader(raw), READ_CHUNK_BYTES)
    return raw


def open_decompressed(path: str) -> BinaryIO:
    """A file's content, decompressed by suffix (strictly: a truncated file raises while reading)."""
    return decompressed(open_input(path), path)


# ---------------------------------------------------------------- listing inputs


@dataclass(frozen=True)
class InputFile:
    """One matched input file."""

    path: str  # as users write it: the URI, or the absolute local path
    size: int


def list_inputs(patterns: list[str], directories: str = "corpus") -> list[InputFile]:
    """The files the patterns name, sorted and without repeats.

    A pattern is a file, a glob (matched one path component at a time; `**` spans
    directories) or a directory. `directories="corpus"`: a directory is a clean corpus as
    pipeline.run writes it (DIR/clean/*.parquet, refused without DIR/stats.json), or a
    directory of *.parquet files. `directories="files"`: a directory means every file under
    it, recursively (hidden files and our staging directories left out). A pattern that
    matches nothing is a StorageError that names it.
    """
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        try:
            matched = _match(pattern, directories)
        except StorageError:
            raise
        except (OSError, ValueError) as error:  # an unknown URI scheme, missing credentials, no permission
            raise StorageError(f"cannot read --input {pattern!r}: {error}") from error
        if not matched:
            raise StorageError(f"--input {pattern!r} matches no file")
        found.update((file.path, file) for file in matched)
    return [found[path] for path in sorted(found)]


def _split_glob(pattern: str) -> tuple[str, list[str]]:
    """('gs://b/dir', ['*', '*.parquet']) for 'gs://b/dir/*/*.parquet': the literal base and the glob parts."""
    parts = pattern.split("/")
    for index, part in enumerate(parts):
        if any(char in part for char in GLOB_CHARS):
            return "/".join(parts[:index]) or ("/" if pattern.startswith("/") else "."), parts[index:]
    return pattern, []


def _glob_match(parts: list[str], globs: list[str]) -> bool:
    if not globs:
        return not parts
    if globs[0] == "**":
        return any(_glob_match(parts[skip:], globs[1:]) for skip in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], globs[0]) and _glob_match(parts[1:], globs[1:])


def _match(pattern: str, directories: str) -> list[InputFile]:
    base, globs = _split_glob(pattern)
    filesystem, inner = resolve(base)
    prefix = base[: base.index("://") + 3] if "://" in base and filesystem.type_name != "local" else ""
    info = filesystem.get_file_info(inner)
    if not globs:
        if info.type == pafs.FileType.File:
            return [InputFile(prefix + info.path, info.size or 0)]
        if info.type == pafs.FileType.Directory:
            if directories == "corpus":
                return _corpus_directory(filesystem, inner, prefix, pattern)
            return _all_files(filesystem, inner, prefix)
        raise StorageError(f"--input {pattern!r}: no such file or directory")
    if info.type != pafs.FileType.Directory:
        raise StorageError(f"--input {pattern!r}: no such directory {base!r}")
    listing = filesystem.get_file_info(pafs.FileSelector(inner, recursive=len(globs) > 1))
    root = inner.rstrip("/") + "/"
    return [InputFile(prefix + entry.path, entry.size or 0) for entry in listing
            if entry.type == pafs.FileType.File and _glob_match(entry.path[len(root):].split("/"), globs)]


def _all_files(filesystem: pafs.FileSystem, inner: str, prefix: str) -> list[InputFile]:
    root = inner.rstrip("/") + "/"
    return [InputFile(prefix + entry.path, entry.size or 0)
            for entry in filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
            if entry.type == pafs.FileType.File
            and not any(part.startswith((".", STAGING_DIR)) for part in entry.path[len(root):].split("/"))]


def _corpus_directory(filesystem: pafs.FileSystem, inner: str, prefix: str, pattern: str) -> list[InputFile]:
    """A clean corpus directory: its clean/*.parquet shards, or the *.parquet files directly in it."""
    clean = posixpath.join(inner, CORPUS_SHARDS)
    if filesystem.get_file_info(clean).type == pafs.FileType.Directory:
        if filesystem.get_file_info(posixpath.join(inner, CORPUS_MARKER)).type != pafs.FileType.File:
            raise StorageError(f"--input {pattern!r} is an unfinished pipeline.run output (clean/ without "
                               f"{CORPUS_MARKER}, which pipeline.run writes last): rerun pipeline.run")
        inner = clean
    listing = filesystem.get_file_info(pafs.FileSelector(inner, recursive=False))
    shards = [InputFile(prefix + entry.path, entry.size or 0) for entry in listing
              if entry.type == pafs.FileType.File and entry.base_name.lower().endswith(".parquet")]
    if not shards:
        raise StorageError(f"--input {pattern!r}: a directory must hold Parquet shards "
                           "(DIR/clean/*.parquet as pipeline.run writes, or DIR/*.parquet); none found")
    return sorted(shards, key=lambda file: file.path)


# ---------------------------------------------------------------- writing


def write_bytes_atomic(path: str, data) -> None:
    """Write bytes under a temp name in the target directory, then rename onto `path`."""
    fs, target = resolve(path)
    fs.create_dir(posixpath.dirname(target), recursive=True)
    temp = f"{target}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(temp) as out:
            out.write(data)
        fs.move(temp, target)
    except BaseException:
        if fs.get_file_info(temp).type == pafs.FileType.File:
            fs.delete_file(temp)
        raise


def write_json_atomic(path: str, payload: object, sort_keys: bool = True) -> None:
    """Write a JSON document (indented, UTF-8, newline-terminated) under a temp name, then rename."""
    text = json.dumps(payload, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def open_output(path: str) -> BinaryIO:
    """A new file for streaming writes (inside a staging directory: published by a rename later)."""
    fs, target = resolve(path)
    fs.create_dir(posixpath.dirname(target), recursive=True)
    return fs.open_output_stream(target)


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes, streamed in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open_input(path) as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def delete(path: str) -> None:
    """Delete a file or a directory tree; nothing when it does not exist."""
    fs, inner = resolve(path)
    found = fs.get_file_info(inner).type
    if found == pafs.FileType.Directory:
        fs.delete_dir(inner)
    elif found == pafs.FileType.File:
        fs.delete_file(inner)


def move(source: str, target: str) -> None:
    fs, inner_source = resolve(source)
    inner_target = resolve(target)[1]
    fs.create_dir(posixpath.dirname(inner_target), recursive=True)
    fs.move(inner_source, inner_target)


def mkdirs(path: str) -> None:
    fs, inner = resolve(path)
    fs.create_dir(inner, recursive=True)


# ---------------------------------------------------------------- staging and publishing


def staging_dir(output: str) -> str:
    """The one place a command stages its output directory: DIR/_temporary."""
    return join(output, STAGING_DIR)


def publish(staging: str, output: str, entries: list[tuple[str, str]], replaced: tuple[str, ...] = (),
            marker: str | None = None) -> list[str]:
    """Move staged files into place, then delete the staging directory.

    `entries` are (staged path, path relative to `output`) pairs; `replaced` names the
    output's files or subdirectories of an earlier run that go first (the marker before
    anything else, so an old marker never describes new files). Returns the relative paths
    written. The caller writes the marker (stats.json, manifest.json) after this returns.
    """
    if marker is not None:
        delete(join(output, marker))
    for name in replaced:
        delete(join(output, name))
    for source, relative in entries:
        move(source, join(output, relative))
    delete(staging)
    return [relative for _, relative in entries]
