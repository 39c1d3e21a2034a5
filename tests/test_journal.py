"""The call journal on its own: what a journal hands its sink, and what the next journal replays from the
segments of a process killed with SIGKILL (real forked processes, real files).

Expected events are the mapping's events for the same calls (:func:`event_from_view` over a view built
here), so every test checks that each call arrives exactly once and unchanged."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from payi_otel.exporters import journal as journal_module
from payi_otel.exporters import journal_segments
from payi_otel.exporters.journal import Journal
from payi_otel.exporters.journal_segments import HEADER_BYTES, RECORD
from payi_otel.exporters.mapping import event_from_view
from payi_otel.exporters.views import SpanView
from payi_otel.finished import FinishedCall

T0 = 1_733_000_000_000_000_000


def call(i: int, content: str = "") -> FinishedCall:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.id": f"chatcmpl-{i}",
        "gen_ai.usage.input_tokens": 12 + i,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.response.finish_reasons": ("stop",),  # a span's sequence: a tuple, read back as a list
        "server.address": "api.openai.com",
    }
    if content:
        attrs["payi.request_properties.note"] = content
    return FinishedCall("chat gpt-4o-mini", T0 + i, T0 + i + 10**9, attrs, False, None, 2**100 + i, 7 + i, True)


def expected(*calls: FinishedCall) -> list[dict[str, Any]]:
    views = [
        SpanView(c.name, c.start_ns, c.end_ns, c.attributes, c.is_error, c.status_message, c.trace_id, c.span_id)
        for c in calls
    ]
    return [event_from_view(v) for v in views]  # type: ignore[misc]


def by_id(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: e["provider_response_id"])


class Sink:
    """Collects events (thread-safe, like the exporter's sink)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self.events.extend(events)


def killed_child(body: Callable[[], None], done: Path) -> None:
    """Run ``body`` in a forked child that then dies by SIGKILL (no exit hook, no close); ``done`` is
    written by the child just before it kills itself, so a failing body fails the test."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            body()
            done.write_text("ok")
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert done.read_text() == "ok"


def replay(directory: Path) -> list[dict[str, Any]]:
    """What a journal started on ``directory`` replays from the segments of dead processes."""
    sink = Sink()
    journal = Journal(directory, sink)
    journal._replay_orphans()
    journal.close()
    return sink.events


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("journal-*"))


def test_records_become_the_mapped_events_and_the_segments_are_removed_at_close(tmp_path):
    sink = Sink()
    journal = Journal(tmp_path, sink)
    calls = [call(i) for i in range(5)]
    for c in calls:
        journal.record(c)
    journal.flush()
    assert by_id(sink.events) == expected(*calls)
    journal.record(call(5))
    journal.close()
    assert by_id(sink.events) == expected(*calls, call(5))
    assert segments(tmp_path) == []
    journal.record(call(6))  # after close: dropped, no error, no file
    assert len(sink.events) == 6 and segments(tmp_path) == []


def test_a_killed_process_is_replayed_from_its_drained_mark_exactly_once(tmp_path):
    spooled = tmp_path / "spooled.jsonl"

    def body() -> None:
        def durable(events: list[dict[str, Any]]) -> None:
            with spooled.open("ab") as fh:
                fh.write(b"".join(orjson.dumps(e) + b"\n" for e in events))
                fh.flush()
                os.fsync(fh.fileno())

        journal = Journal(tmp_path / "spool", durable)
        for i in range(4):
            journal.record(call(i))
        journal.flush()  # these four are in the sink and marked drained
        for i in range(4, 7):
            journal.record(call(i))  # these three are only journaled when the process dies

    killed_child(body, tmp_path / "done")
    assert segments(tmp_path / "spool"), "the dead process's segments are on disk"
    sent = [orjson.loads(line) for line in spooled.read_bytes().splitlines()]
    assert by_id(sent) == expected(*map(call, range(4)))
    assert by_id(replay(tmp_path / "spool")) == expected(*map(call, range(4, 7)))
    assert segments(tmp_path / "spool") == []
    assert replay(tmp_path / "spool") == []


def test_a_journal_closed_right_after_it_started_still_replays_a_killed_process(tmp_path):
    """A short-lived process (a restart that makes no call) closes before its thread's first scan."""
    calls = [call(i) for i in range(3)]
    journal_then_die(tmp_path / "spool", tmp_path / "done", calls)
    sink = Sink()
    Journal(tmp_path / "spool", sink).close()
    assert by_id(sink.events) == expected(*calls)
    assert segments(tmp_path / "spool") == []


def only_segment(directory: Path) -> Path:
    """The one segment of a dead process that has records (its spare is empty)."""
    written = [p for p in segments(directory) if p.read_bytes()[HEADER_BYTES : HEADER_BYTES + 1] != b"\0"]
    assert len(written) == 1
    return written[0]


def journal_then_die(directory: Path, done: Path, calls: list[FinishedCall]) -> None:
    def body() -> None:
        journal = Journal(directory, Sink())
        for c in calls:
            journal.record(c)

    killed_child(body, done)


def record_offsets(data: bytes) -> list[int]:
    offsets, pos = [], HEADER_BYTES
    while (length := RECORD.unpack_from(data, pos)[0]) != 0:
        offsets.append(pos)
        pos += RECORD.size + length
    return offsets


def test_a_record_torn_before_its_header_ends_the_segment(tmp_path):
    calls = [call(i) for i in range(3)]
    journal_then_die(tmp_path / "spool", tmp_path / "done", calls)
    path = only_segment(tmp_path / "spool")
    data = bytearray(path.read_bytes())
    assert data[-100:] == bytes(100), "a zero tail after the records"
    last = record_offsets(bytes(data))[-1]
    data[last : last + RECORD.size] = bytes(RECORD.size)  # killed after the payload copy, before the header
    path.write_bytes(data)
    assert by_id(replay(tmp_path / "spool")) == expected(*calls[:2])
    assert segments(tmp_path / "spool") == []


def test_a_record_with_a_lost_page_or_a_bad_header_never_becomes_an_event(tmp_path, caplog):
    calls = [call(i, content="x" * 3000) for i in range(4)]  # records over a page each
    journal_then_die(tmp_path / "spool", tmp_path / "done", calls)
    path = only_segment(tmp_path / "spool")
    data = bytearray(path.read_bytes())
    offsets = record_offsets(bytes(data))
    data[offsets[1] + 1000 : offsets[1] + 2000] = bytes(1000)  # part of record 1 lost (reads as zeros)
    data[offsets[3] : offsets[3] + 4] = (10**6).to_bytes(4, "little")  # record 3's length does not match its check
    path.write_bytes(data)
    assert by_id(replay(tmp_path / "spool")) == expected(calls[0], calls[2])
    assert "unreadable journal record" in caplog.text and "damaged journal record" in caplog.text


def test_concurrent_writers_switch_segments_and_lose_nothing_when_killed(tmp_path, monkeypatch):
    # the child's drain must not run: every record is replayed
    monkeypatch.setattr(journal_module, "_BACKLOG_SEGMENTS", 10**6)
    monkeypatch.setattr(journal_segments, "SEGMENT_BYTES", 16 * 1024)  # a switch every few dozen records
    threads, per_thread = 8, 150
    calls = [call(t * 1000 + i) for t in range(threads) for i in range(per_thread)]

    def body() -> None:
        journal = Journal(tmp_path / "spool", Sink())
        barrier = threading.Barrier(threads)

        def write(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                journal.record(calls[t * per_thread + i])

        workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    killed_child(body, tmp_path / "done")
    assert len(segments(tmp_path / "spool")) > 5
    assert by_id(replay(tmp_path / "spool")) == by_id(expected(*calls))


def test_concurrent_writers_and_drains_hand_every_call_to_the_sink_once(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_segments, "SEGMENT_BYTES", 16 * 1024)
    sink = Sink()
    journal = Journal(tmp_path, sink)
    calls = [call(i) for i in range(1200)]

    def write(part: list[FinishedCall]) -> None:
        for c in part:
            journal.record(c)

    workers = [threading.Thread(target=write, args=(calls[t::6],)) for t in range(6)]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        journal.flush()
    journal.close()
    assert by_id(sink.events) == by_id(expected(*calls))
    assert segments(tmp_path) == []


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_segments, "SEGMENT_BYTES", 16 * 1024)
    big = call(1, content="y" * 40_000)
    journal_then_die(tmp_path / "spool", tmp_path / "done", [call(0), big, call(2)])
    assert sorted(p.stat().st_size for p in segments(tmp_path / "spool"))[-1] > 40_000
    assert by_id(replay(tmp_path / "spool")) == expected(call(0), big, call(2))


def test_a_forked_child_journals_into_its_own_segments(tmp_path):
    sink = Sink()
    journal = Journal(tmp_path / "spool", sink)
    for i in range(3):
        journal.record(call(i))

    def child() -> None:  # inherits the parent's journal, mid-segment, with three records not yet drained
        for i in range(100, 103):
            journal.record(call(i))

    killed_child(child, tmp_path / "done")
    for i in range(3, 5):
        journal.record(call(i))
    journal.flush()
    assert by_id(sink.events) == expected(*map(call, range(5)))  # the parent's records, intact, once
    journal._replay_orphans()  # the dead child's segment
    assert by_id(sink.events) == by_id(expected(*map(call, range(5)), *map(call, range(100, 103))))
    journal.close()
    assert segments(tmp_path / "spool") == []


def test_segments_of_earlier_versions_are_replayed(tmp_path):
    """``.jsonl`` segments: one JSON array a line, the last line possibly torn by a kill."""
    spool = tmp_path / "spool"
    spool.mkdir()
    calls = [call(0), call(1)]
    lines = [
        orjson.dumps([c.name, c.start_ns, c.end_ns, f"{c.trace_id:032x}", c.span_id, c.is_error, c.status_message,
                      c.attributes, c.parent_span_id, {}])
        for c in calls
    ]  # fmt: skip
    torn = orjson.dumps([call(2).name, call(2).start_ns])[:-1]
    (spool / f"journal-{T0:020d}-1-000000.jsonl").write_bytes(b"\n".join([*lines, torn]))
    assert by_id(replay(spool)) == expected(*calls)
    assert segments(spool) == []


def test_a_file_that_is_not_a_segment_is_left_alone(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    stranger = spool / f"journal-{T0:020d}-1-000000.seg"
    stranger.write_bytes(b"something else entirely")
    assert replay(spool) == []
    assert stranger.exists()


@pytest.mark.parametrize("zeros", [0, 4096])
def test_a_segment_created_but_never_written_is_removed(tmp_path, zeros):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"journal-{T0:020d}-1-000000.seg").write_bytes(bytes(zeros))
    assert replay(spool) == []
    assert segments(spool) == []


def test_a_sink_that_fails_gets_the_same_records_again_and_none_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "_BACKLOG_SEGMENTS", 10**6)  # the writers get ahead of the failing drain
    monkeypatch.setattr(journal_segments, "SEGMENT_BYTES", 16 * 1024)
    sink = Sink()
    failures = [OSError("spool full")]

    def flaky(events: list[dict[str, Any]]) -> None:
        if failures:
            raise failures.pop()
        sink(events)

    journal = Journal(tmp_path, flaky)
    calls = [call(i) for i in range(300)]  # several segments
    for c in calls:
        journal.record(c)
    with pytest.raises(OSError):
        journal.flush()
    assert len(segments(tmp_path)) > 3, "nothing deleted while the sink failed"
    journal.flush()
    assert by_id(sink.events) == by_id(expected(*calls))
    journal.close()
    assert len(sink.events) == 300 and segments(tmp_path) == []


def test_a_backlog_is_handed_to_the_sink_one_segment_at_a_time(tmp_path, monkeypatch):
    """However far the writers got ahead of the drain, a drain never holds more than a segment's records
    (a whole backlog read at once would raise the process's memory for good)."""
    monkeypatch.setattr(journal_module, "_BACKLOG_SEGMENTS", 10**6)  # the writers get ahead of the drain
    monkeypatch.setattr(journal_segments, "SEGMENT_BYTES", 16 * 1024)
    batches: list[int] = []
    sink = Sink()

    def counting(events: list[dict[str, Any]]) -> None:
        batches.append(len(events))
        sink(events)

    journal = Journal(tmp_path, counting)
    calls = [call(i) for i in range(400)]
    for c in calls:
        journal.record(c)
    per_segment = []
    for path in segments(tmp_path):
        with contextlib.suppress(FileNotFoundError):  # a segment the background drain just finished
            per_segment.append(len(journal_segments.payloads(path.read_bytes()[HEADER_BYTES:], path)))
    journal.flush()
    journal.close()
    assert max(batches) <= max(per_segment) < 100, (batches, per_segment)
    assert by_id(sink.events) == by_id(expected(*calls))


def test_a_writer_that_never_releases_the_gil_does_not_starve_the_drain(tmp_path, monkeypatch):
    """Calls that never release the GIL (responses served from memory) would starve the drain thread, whose
    every system call costs it a switch interval to win the GIL back: the backlog of full segments, and the
    process's memory, would grow without bound. A writer far ahead lets the drain catch up instead."""
    monkeypatch.setattr(journal_segments, "SEGMENT_BYTES", 16 * 1024)
    sink = Sink()

    def releasing(events: list[dict[str, Any]]) -> None:
        for _ in events:  # a sink with a system call per event, as a file or socket write has
            time.sleep(0)
        sink(events)

    journal = Journal(tmp_path, releasing)
    calls = [call(i) for i in range(3000)]  # about 100 segments
    backlog = []
    for c in calls:  # pure Python between records: the GIL is never released here
        journal.record(c)
        backlog.append(len(journal._full))
    journal.flush()
    journal.close()
    assert max(backlog) <= 4, f"full segments waiting for the drain reached {max(backlog)}"
    assert by_id(sink.events) == by_id(expected(*calls))
