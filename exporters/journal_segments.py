"""Journal segments: the on-disk form of the call journal (:mod:`.journal`), written through ``mmap``.

A segment is a file of fixed size (:data:`SEGMENT_BYTES`, more for one oversized record), created,
``flock``-ed, allocated (``posix_fallocate`` where there is one: a full disk is an error at creation,
never a ``SIGBUS`` on a later write) and pre-faulted by the journal's background thread, then mapped ``MAP_SHARED``. A
writer copies a record into the mapped pages: no system call and no release of the GIL on the
caller's thread. The pages are the file's page cache, so a record whose copy has finished survives a
kill -9 of the process exactly as a ``write`` would.

Layout (little-endian)::

    header   8 bytes  MAGIC
             8 bytes  u64 drained: records before this offset are already events in the sink
    records  u32 length, u32 length ^ CHECK, then `length` bytes of JSON:
             [name, start_ns, end_ns, trace_id_hex, span_id, is_error, status_message, attributes,
              parent_span_id, resource_properties]
             (trace_id_hex as ``hex()`` writes it, "0x" and no leading zeros; earlier versions wrote
             32 digits: both read back by ``int(..., 16)``)
    tail     zeros up to the end of the file

A record's payload is copied first and its 8-byte header last, so a record torn by a kill has no
header: the zeros where its header would be end the segment. A header whose check word does not
match its length, a length that runs past the end of the file, or a payload that is not such a JSON
array (a page lost by a power failure reads as zeros, never valid JSON) is never turned into an
event: reading stops or skips it with a warning.

Segments written by earlier versions (``*.jsonl``, one JSON array a line, appended with ``write``)
are still read.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .views import SpanView

_decode: Callable[[bytes], Any]
try:  # the fast decoder when installed; the standard library's otherwise
    from orjson import loads as _decode
except ImportError:  # pragma: no cover - depends on the installation
    from json import loads as _decode

__all__ = [
    "LEGACY_SUFFIX",
    "PREFIX",
    "RECORD",
    "RECORD_CHECK",
    "SEGMENT_BYTES",
    "SUFFIX",
    "Segment",
    "payloads",
    "read_views",
    "view",
    "views",
]

logger = logging.getLogger("payi_otel.exporters")

PREFIX = "journal-"
SUFFIX = ".seg"
LEGACY_SUFFIX = ".jsonl"  # the write()-appended JSON Lines segments of earlier versions
MAGIC = b"PAYIJRN1"
_HEADER = struct.Struct("<8sQ")
HEADER_BYTES = _HEADER.size
_DRAINED = struct.Struct("<Q")
RECORD = struct.Struct("<II")  # (length, length ^ RECORD_CHECK)
RECORD_CHECK = 0x5A17C0DE
SEGMENT_BYTES = 1 << 20
_PAGE = mmap.PAGESIZE
_fallocate = getattr(os, "posix_fallocate", None)


class Segment:
    """One segment file of this process, mapped for writing and locked against replay by others."""

    __slots__ = ("drained", "fd", "mm", "path", "size")

    def __init__(self, fd: int, mm: mmap.mmap, path: Path, size: int) -> None:
        self.fd, self.mm, self.path, self.size = fd, mm, path, size
        self.drained = HEADER_BYTES  # records before this offset are events in the sink

    @classmethod
    def create(cls, directory: Path, seq: int, min_bytes: int = 0) -> Segment:
        """A new, empty, pre-faulted segment. It is created under a hidden name and locked before it
        becomes visible, so no other process can take it for the segment of a dead process."""
        size = max(SEGMENT_BYTES, -(-(HEADER_BYTES + min_bytes) // _PAGE) * _PAGE)
        name = f"{PREFIX}{time.time_ns():020d}-{os.getpid()}-{seq:06d}{SUFFIX}"
        hidden = directory / f".{name}"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _fallocate is not None:
                _fallocate(fd, 0, size)
            else:  # pragma: no cover - platforms without posix_fallocate (macOS): a sparse file
                os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            for offset in range(_PAGE, size, _PAGE):  # write-fault every page now, not on a caller's thread
                mm[offset] = 0
            mm[:HEADER_BYTES] = _HEADER.pack(MAGIC, HEADER_BYTES)
            path = directory / name
            os.replace(hidden, path)
        except BaseException:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        return cls(fd, mm, path, size)

    def undrained(self, end: int | None = None) -> list[bytes]:
        """The payloads of the records from the drained mark to ``end`` (all records when None)."""
        return payloads(self.mm[self.drained : self.size if end is None else end], self.path)

    def mark_drained(self, offset: int) -> None:
        """Records before ``offset`` are events in the sink: a replay starts there."""
        self.mm[len(MAGIC) : HEADER_BYTES] = _DRAINED.pack(offset)
        self.drained = offset

    def remove(self) -> None:
        """Unmap, unlock and delete the segment."""
        self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        """Unmap and close in this process only (a forked child lets go of its parent's segments)."""
        self.mm.close()
        os.close(self.fd)


def view(payload: bytes) -> SpanView:
    """The span view of one record's payload; ValueError or TypeError when it is not a journal record."""
    name, start, end, trace_hex, span_id, is_error, message, attrs, parent, resource = _decode(payload)
    if not (isinstance(name, str) and isinstance(attrs, dict) and isinstance(resource, dict)):
        raise TypeError("not a journal record")
    return SpanView(name, start, end, attrs, bool(is_error), message, int(trace_hex, 16), span_id, parent, resource)


def payloads(data: bytes, path: Path) -> list[bytes]:
    """The payloads of the complete records at the start of ``data``, up to the zero tail."""
    found = []
    pos, end_of_data = 0, len(data)
    while pos + RECORD.size <= end_of_data:
        length, check = RECORD.unpack_from(data, pos)
        if length == 0 and check == 0:
            break  # the zero tail (or a record torn before its header was written)
        start, end = pos + RECORD.size, pos + RECORD.size + length
        if check != length ^ RECORD_CHECK or end > end_of_data:
            logger.warning("Pay-i exporter: damaged journal record in %s; the rest is skipped", path)
            break
        found.append(data[start:end])
        pos = end
    return found


def _segment_payloads(data: bytes, path: Path) -> list[bytes]:
    """The payloads of a segment file's records from its drained mark on."""
    if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
        if data.strip(b"\0"):
            raise ValueError(f"{path.name} is not a journal segment")
        return []  # created but never written (the process died while preparing it)
    drained = _HEADER.unpack_from(data)[1]
    if not HEADER_BYTES <= drained <= len(data):
        logger.warning("Pay-i exporter: bad drained offset in %s; reading all its records", path)
        drained = HEADER_BYTES
    return payloads(data[drained:], path)


def views(found: list[bytes], path: Path) -> list[SpanView]:
    """The span views of record payloads; one that cannot be read is skipped with a warning (never
    turned into a wrong event)."""
    result = []
    for payload in found:
        try:
            result.append(view(payload))
        except (ValueError, TypeError):
            logger.warning("Pay-i exporter: unreadable journal record in %s skipped", path)
    return result


def read_views(path: Path, fd: int) -> list[SpanView]:
    """The records of the segment file open as ``fd`` not yet drained into the sink, as span views."""
    with os.fdopen(os.dup(fd), "rb") as fh:
        data = fh.read()
    return views(data.splitlines() if path.name.endswith(LEGACY_SUFFIX) else _segment_payloads(data, path), path)
