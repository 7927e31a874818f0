"""Byte ranges of one uncompressed file: several readers, the same lines and line numbers as one reader.

A file is cut at fixed offsets into ranges [start, end) (`cut`). A line belongs to the range
that holds its first byte, so a range's lines start after the first newline at or past
`start - 1` (the first range: at byte 0) and end with the line that crosses `end`; every line
is read by exactly one range, whatever the cut. Line numbers come from `count_lines`: the
number of lines a range owns, read in one pass that only counts b"\\n"; the prefix sums of
the counts of a file's ranges give each range its first line number. Only b"\\n" is looked
for, and that byte never occurs inside a UTF-8 or CP949/EUC-KR character, so a cut can fall
anywhere, inside a character or between \\r and \\n. Engine-free: transforms.corpus_stages
plans, numbers and reads the ranges of pipeline.run's inputs (docs/scale.md).
"""
from __future__ import annotations

from transforms.storage import READ_CHUNK_BYTES

# A larger uncompressed file (text, JSON lines, unquoted tsv/csv) is read by several workers (--read-range-bytes).
READ_RANGE_BYTES = 64 << 20


def cut(size: int, range_bytes: int) -> list[tuple[int, int]]:
    """[start, end) offsets of ranges of about `range_bytes` covering a file of `size` bytes (one for a small file)."""
    count = max(1, -(-size // range_bytes))
    bounds = [size * k // count for k in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def count_lines(handle, start: int, end: int, chunk_bytes: int = READ_CHUNK_BYTES) -> int:
    """How many lines start in [start, end) of a seekable binary file: those after a b"\\n" at
    start-1 .. end-2, and the line at byte 0 for the first range of a non-empty file."""
    if end <= start:
        return 0
    position = max(start - 1, 0)
    handle.seek(position)
    lines = int(start == 0)
    while position < end - 1:
        chunk = handle.read(min(chunk_bytes, end - 1 - position))
        if not chunk:
            break
        lines += chunk.count(b"\n")
        position += len(chunk)
    return lines


class RangeStream:
    """The bytes of the lines that range [start, end) of a seekable binary file owns, as a stream
    (`read1`/`read`) for transforms.reading: from after the first b"\\n" at or past start-1 (byte 0
    for start 0) through the first b"\\n" at or past end-1, or the end of the file."""

    def __init__(self, handle, start: int, end: int, chunk_bytes: int = READ_CHUNK_BYTES):
        self.handle, self.end, self.chunk_bytes = handle, end, chunk_bytes
        self.position, self.pending, self.done = max(start - 1, 0), b"", False
        handle.seek(self.position)
        if start > 0:
            self._skip_to_line_start()
        if self.position >= end:  # the line that crosses `start` also crosses `end`: a range without lines
            self.pending, self.done = b"", True

    def _skip_to_line_start(self) -> None:
        while chunk := self.handle.read(self.chunk_bytes):
            newline = chunk.find(b"\n")
            if newline >= 0:
                self.pending, self.position = chunk[newline + 1:], self.position + newline + 1
                return
            self.position += len(chunk)
        self.done = True  # no line starts in the rest of the file

    def read1(self, size: int = -1) -> bytes:
        if self.done:
            return b""
        data, self.pending = self.pending or self.handle.read(self.chunk_bytes), b""
        if size is not None and 0 <= size < len(data):
            data, self.pending = data[:size], data[size:]
        if not data:
            self.done = True
            return b""
        last = data.find(b"\n", max(self.end - 1 - self.position, 0))  # the end of the line that crosses `end`
        if last >= 0:
            data, self.pending, self.done = data[: last + 1], b"", True
        self.position += len(data)
        return data

    read = read1
