"""`payi-otel ingest`: a backfill killed midway (SIGKILL) and resumed stores every good line once, and the
reject file lists exactly the bad lines; CSV input; dry run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from service_support import running_service, stored_requests

N_LINES = 8000
BAD = {
    17: "not json {",
    250: json.dumps({"category": "system.openai", "units": {"text": {"input": -1}}}),
    4000: json.dumps([1, 2]),
    7999: json.dumps({"units": {}}),
}


def _write(path):
    start = datetime.now(UTC) - timedelta(days=10)
    with open(path, "w") as f:
        for n in range(1, N_LINES + 1):
            if n in BAD:
                f.write(BAD[n] + "\n")
                continue
            f.write(
                json.dumps(
                    {
                        "category": "system.openai",
                        "resource": "gpt-4o-mini",
                        "units": {"text": {"input": n, "output": 1}},
                        "user_id": f"u{n % 7}",
                        "event_timestamp": (start + timedelta(seconds=n)).isoformat(),
                    }
                )
                + "\n"
            )


def _ingest(svc, *args, **popen):
    env = {**os.environ, "PAYI_BASE_URL": svc.base_url, "PAYI_API_KEY": svc.api_key}
    return subprocess.Popen(
        [sys.executable, "-m", "payi_otel.cli", "ingest", "--batch-size", "200", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_killed_and_resumed_backfill_stores_every_good_line_once(tmp_path):
    data = tmp_path / "events.jsonl"
    _write(data)
    with running_service(tmp_path / "svc") as svc:
        proc = _ingest(svc, str(data))
        state = tmp_path / "events.jsonl.ingest-state"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once some batches, not all, are committed
            if state.exists() and 1000 < json.loads(state.read_text() or "{}").get("line", 0) < N_LINES - 1000:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        done_at_kill = json.loads(state.read_text())["line"]
        assert 0 < done_at_kill < N_LINES
        # resumed: continues from the state file
        _, err = _ingest(svc, str(data)).communicate(timeout=120)
        assert f"{done_at_kill} lines done by an earlier run" in err
        assert sorted(_reject_lines(tmp_path)) == sorted(BAD)  # none twice, none lost across the kill
        # a rerun of the whole file (state removed) adds nothing: every line's dedupe id is known
        state.unlink()
        rerun = _ingest(svc, str(data))
        _, rerun_err = rerun.communicate(timeout=120)
        assert f"{N_LINES - len(BAD)} already stored" in rerun_err
    rows = stored_requests(tmp_path / "svc")
    inputs = sorted(r["units"]["text"]["input"] for r in rows)
    assert inputs == [n for n in range(1, N_LINES + 1) if n not in BAD]  # each good line exactly once
    assert sorted(_reject_lines(tmp_path)) == sorted(BAD)


def _reject_lines(tmp_path):
    rejects = [json.loads(line) for line in (tmp_path / "events.jsonl.rejects").read_text().splitlines()]
    assert all(r["reason"] for r in rejects)
    return [r["line"] for r in rejects]


def test_csv_and_dry_run(tmp_path):
    csv_file = tmp_path / "old.csv"
    csv_file.write_text(
        "category,resource,user_id,request_tags,units.text.input,units.text.output\n"
        "system.openai,gpt-4o-mini,alice,a;b,100,10\n"
        "system.openai,gpt-4o-mini,bob,,x,1\n"
        "system.openai,gpt-4o-mini,carol,,5,\n"
    )
    with running_service(tmp_path / "svc") as svc:
        _, err = _ingest(svc, "--dry-run", str(csv_file)).communicate(timeout=60)
        assert "2 events valid" in err and "1 rejected" in err
        assert stored_requests(tmp_path / "svc") == []
        assert not (tmp_path / "old.csv.ingest-state").exists()  # a later real run starts at the top
        proc = _ingest(svc, "--format", "csv", "-", stdin=subprocess.PIPE, cwd=tmp_path)
        _, err = proc.communicate(csv_file.read_text(), timeout=60)
        assert "2 events sent" in err and "1 rejected" in err, err
    rows = {r["user_id"]: r for r in stored_requests(tmp_path / "svc")}
    assert set(rows) == {"alice", "carol"}
    assert rows["alice"]["units"]["text"] == {"input": 100, "output": 10}
    assert json.loads(rows["alice"]["request_tags"]) == ["a", "b"]
    reject = json.loads((tmp_path / "stdin.rejects").read_text())
    assert reject["line"] == 3 and "units.text.input" in reject["reason"]


def test_bulk_items_with_the_same_dedupe_id_store_one_request(tmp_path):
    import httpx

    item = {"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 3}}, "dedupe_id": "k1"}
    with running_service(tmp_path) as svc:
        r = httpx.post(f"{svc.base_url}/api/v1/ingest/bulk", json=[item, item], headers={"xProxy-api-key": svc.api_key})
        assert r.status_code == 200 and r.json()["ingest_count"] == 1 and r.json()["duplicate_count"] == 1
        r = httpx.post(f"{svc.base_url}/api/v1/ingest/bulk", json=[item], headers={"xProxy-api-key": svc.api_key})
        assert r.json()["duplicate_count"] == 1
    assert len(stored_requests(tmp_path)) == 1
