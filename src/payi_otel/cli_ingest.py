"""``payi-otel ingest FILE...``: backfill historical events (JSON Lines or CSV) through the bulk ingest API.

Resumable: after each acknowledged batch, ``FILE.ingest-state`` records the file's SHA-256 and the number of
lines done; a rerun continues from there (a changed file starts over). Idempotent: every line is sent with a
stable ``dedupe_id`` (file hash and line number), so a batch sent again after a crash is not stored twice.
Lines the API refuses go to ``FILE.rejects`` (JSON Lines: line number and reason); good lines go through.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when an ingest runs, not by every payi-otel command
    import httpx

ENV_BASE_URL = "PAYI_BASE_URL"
ENV_API_KEY = "PAYI_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:3011"
# CSV columns: these attribution and event fields, lists separated by ';', units as units.<unit>.input/output.
CSV_FIELDS = (
    "category",
    "resource",
    "event_timestamp",
    "end_to_end_latency_ms",
    "time_to_first_token_ms",
    "http_status_code",
    "provider_response_id",
    "use_case_name",
    "use_case_id",
    "use_case_version",
    "use_case_step",
    "user_id",
    "account_name",
    "scope",
    "request_tags",
    "limit_ids",
)
_CSV_INTS = {"end_to_end_latency_ms", "time_to_first_token_ms", "http_status_code", "use_case_version"}
_CSV_LISTS = {"request_tags", "limit_ids"}


class IngestError(Exception):
    """A problem that stops the backfill (bad option, unreachable API); state so far is kept."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ingest", help="backfill historical events from JSON Lines or CSV files ('-': stdin)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--base-url", help=f"Pay-i API or local service (env {ENV_BASE_URL}, default {DEFAULT_BASE_URL})")
    p.add_argument("--batch-size", type=int, default=500, help="events per bulk request (1-1000, default 500)")
    p.add_argument(
        "--format",
        choices=("auto", "jsonl", "csv"),
        default="auto",
        help="input format (auto: .csv files are CSV, others JSON Lines)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate only; nothing is sent")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass
class Counts:
    sent: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def csv_item(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row as a bulk ingest item (empty cells are absent)."""
    item: dict[str, Any] = {}
    units: dict[str, dict[str, int]] = {}
    for name, raw in row.items():
        value = (raw or "").strip()
        if name is None or not value:
            continue
        if name.startswith("units."):
            unit, _, direction = name[len("units.") :].rpartition(".")
            if direction not in ("input", "output") or not unit:
                raise ValueError(f"column {name!r}: expected units.<unit>.input or units.<unit>.output")
            units.setdefault(unit, {})[direction] = _int(name, value)
        elif name in _CSV_INTS:
            item[name] = _int(name, value)
        elif name in _CSV_LISTS:
            item[name] = [v.strip() for v in value.split(";") if v.strip()]
        elif name in CSV_FIELDS:
            item[name] = value
        else:
            raise ValueError(f"column {name!r}: unknown (see payi-otel ingest in the README)")
    item["units"] = units
    return item


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an integer") from None


def _lines(data: bytes, fmt: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, item or the reason it cannot be read) for every data line (1-based, as editors count)."""
    text = data.decode("utf-8", errors="replace")
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            try:
                yield reader.line_num, csv_item(row)
            except ValueError as exc:
                yield reader.line_num, str(exc)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not JSON: {exc.msg} at column {exc.colno}"
            continue
        yield number, value if isinstance(value, dict) else "not a JSON object"


class Source:
    """One input: its bytes, identity, and (for files) the state and reject files beside it."""

    def __init__(self, name: str, fmt: str) -> None:
        self.name = name
        self.data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.lines = self.data.count(b"\n") + (0 if self.data.endswith(b"\n") or not self.data else 1)
        self.format = fmt if fmt != "auto" else ("csv" if name.lower().endswith(".csv") else "jsonl")
        self.state_path = None if name == "-" else Path(name + ".ingest-state")
        self.reject_path = Path("stdin.rejects" if name == "-" else name + ".rejects")

    def done_lines(self) -> int:
        if self.state_path is None or not self.state_path.exists():
            return 0
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return 0
        return int(state.get("line", 0)) if state.get("sha256") == self.sha else 0

    def commit(self, line: int) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sha256": self.sha, "line": line}))
        os.replace(tmp, self.state_path)  # atomic: a kill leaves the old state or the new one


def _send(client: httpx.Client, items: list[dict[str, Any]]) -> dict[str, Any]:
    import httpx

    delay = 0.5
    for attempt in range(8):
        try:
            r = client.post("/api/v1/ingest/bulk", json=items)
        except httpx.TransportError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if r.status_code < 300:
                return dict(r.json())
            if r.status_code < 500 and r.status_code != 429:
                raise IngestError(f"the API refused the batch with {r.status_code}: {r.text[:300]}")
            error = f"HTTP {r.status_code}"
        if attempt == 7:
            raise IngestError(f"gave up after 8 attempts: {error}")
        time.sleep(delay)
        delay = min(delay * 2, 10)
    raise AssertionError("unreachable")


def ingest_source(src: Source, client: httpx.Client | None, batch_size: int, counts: Counts, progress: Any) -> None:
    start = src.done_lines()
    kept: list[str] = []
    if start and src.reject_path.exists():  # rejects of lines already done; later ones will be written again
        kept = [r for r in src.reject_path.read_text().splitlines() if r and json.loads(r)["line"] <= start]
    with open(src.reject_path, "w") as rejects:
        rejects.writelines(r + "\n" for r in kept)
        rejects.flush()
        task = progress.add_task(src.name, total=src.lines, completed=start) if progress else None
        batch: list[tuple[int, dict[str, Any]]] = []
        last = start

        def reject(line: int, reason: str) -> None:
            counts.rejected += 1
            rejects.write(json.dumps({"line": line, "reason": reason}) + "\n")

        def flush(upto: int) -> None:
            if client is None:  # dry run: the service's own schema says what it would refuse
                for line, item in batch:
                    problem = _schema_problem(item)
                    if problem is None:
                        counts.sent += 1
                    else:
                        reject(line, problem)
            elif batch:
                answer = _send(client, [item for _, item in batch])
                bad = {e["item_index"]: e["xproxy_result"]["message"] for e in answer.get("errors", [])}
                for index, (line, _) in enumerate(batch):
                    if index in bad:
                        reject(line, bad[index])
                counts.sent += len(batch) - len(bad)
                counts.duplicates += int(answer.get("duplicate_count", 0))
            batch.clear()
            rejects.flush()
            os.fsync(rejects.fileno())
            if client is not None:  # a dry run leaves nothing for a real run to skip
                src.commit(upto)

        for line, item in _lines(src.data, src.format):
            if line <= start:
                counts.skipped += 1
                continue
            if isinstance(item, str):
                reject(line, item)
            else:
                item["dedupe_id"] = f"{src.sha[:32]}:{line}"
                batch.append((line, item))
            last = line
            if len(batch) >= batch_size:
                flush(last)
                if progress:
                    progress.update(task, completed=last)
        flush(last)
        if progress:
            progress.update(task, completed=src.lines)


def _schema_problem(item: dict[str, Any]) -> str | None:
    from pydantic import ValidationError

    from payi_otel.service.errors import validation_error
    from payi_otel.service.models import BulkIngestRequest

    try:
        BulkIngestRequest.model_validate(item)
    except ValidationError as exc:
        return validation_error(exc).message
    return None


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(TextColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:,.0f} lines/s")

    import httpx

    if not 1 <= args.batch_size <= 1000:
        raise IngestError(f"--batch-size {args.batch_size}: must be between 1 and 1000")
    base_url = args.base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    if not base_url.startswith(("http://", "https://")):
        raise IngestError(f"--base-url {base_url!r}: must be an http:// or https:// URL")
    key = os.environ.get(ENV_API_KEY)
    if not key and not args.dry_run:
        raise IngestError(f"{ENV_API_KEY} is not set: the application key events are sent with")
    counts = Counts()
    client = (
        None if args.dry_run else httpx.Client(base_url=base_url, headers={"xProxy-api-key": key or ""}, timeout=60.0)
    )
    show = not args.no_progress and sys.stderr.isatty()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(""), TimeRemainingColumn()]
    progress = Progress(*columns, disable=not show)
    try:
        with progress:
            for name in args.files:
                try:
                    src = Source(name, args.format)
                except OSError as exc:
                    raise IngestError(f"{name}: cannot read it ({exc.strerror})") from None
                ingest_source(src, client, args.batch_size, counts, progress if show else None)
    finally:
        if client is not None:
            client.close()
    verb = "valid" if args.dry_run else "sent"
    print(
        f"{counts.sent} events {verb}; {counts.duplicates} already stored; {counts.rejected} rejected "
        f"(see *.rejects); {counts.skipped} lines done by an earlier run",
        file=sys.stderr,
    )
    return 1 if counts.rejected else 0
