"""`payi-otel limits ...` and limits in `payi-otel report`, against a real service on 127.0.0.1."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from service_support import running_service

from payi_otel.cli import main

GPT4O = {"category": "system.openai", "resource": "gpt-4o", "units": {"text": {"input": 1000, "output": 100}}}


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_limits_commands_and_report(tmp_path, capsys):
    data = str(tmp_path)
    with running_service(tmp_path) as svc:
        code, out, _ = run(
            capsys, "limits", "create", "jane", "--max", "0.01", "--threshold", "0.5", "--data-dir", data
        )
        assert code == 0
        jane = out.strip()
        code, out, _ = run(
            capsys, "limits", "create", "org", "--max", "100", "--id", "org", "--reset", "Weekly", "--data-dir", data
        )
        assert code == 0 and out.strip() == "org"
        costs = []
        with httpx.Client(base_url=svc.base_url, headers={"xProxy-api-key": svc.api_key}) as c:
            for ids in (f"{jane},org", f"{jane},org", "org"):
                body = c.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-Limit-IDs": ids}).json()
                costs.append((ids, body["xproxy_result"]["cost"]["total"]["base"]))
        jane_spend = math.fsum(c for ids, c in costs if jane in ids)
        org_spend = math.fsum(c for _, c in costs)

        code, out, _ = run(capsys, "report", "--by", "limit", "--format", "json", "--data-dir", data)
        report = json.loads(out)
        by_limit = {r["group"]["limit"]: (r["requests"], r["cost_usd"]) for r in report["rows"]}
        assert by_limit["jane"][0] == 2 and by_limit["org"][0] == 3
        assert by_limit["jane"][1] == pytest.approx(jane_spend, rel=1e-12)
        assert by_limit["org"][1] == pytest.approx(org_spend, rel=1e-12)
        assert report["total"]["requests"] == 3  # a request naming two limits counts once in the total
        limits = {lim["limit_name"]: lim for lim in report["limits"]}
        assert limits["jane"]["state"] == (
            "overrun" if jane_spend > 0.01 else "exceeded" if jane_spend >= 0.005 else "ok"
        )
        assert limits["jane"]["spend_usd"] == pytest.approx(jane_spend, rel=1e-12) and limits["jane"]["max_usd"] == 0.01
        assert limits["org"]["reset_schedule"] == "weekly" and limits["org"]["next_reset"]

        code, out, _ = run(capsys, "report", "--data-dir", data)
        assert "limits (spend since each limit's last reset):" in out and "jane" in out

        code, out, _ = run(capsys, "limits", "reset", jane, "--data-dir", data)
        assert code == 0 and "kept 2 requests" in out
        code, out, _ = run(capsys, "limits", "history", jane, "--format", "json", "--data-dir", data)
        history = json.loads(out)
        assert [(h["trigger"], h["requests"]) for h in history] == [("manual", 2)]
        # the running service sees what the command changed
        got = httpx.get(f"{svc.base_url}/api/v1/limits/{jane}", headers={"xProxy-api-key": svc.api_key}).json()
        assert got["limit"]["totals"]["requests"]["total"] == 0

        code, out, _ = run(capsys, "limits", "schedule", "org", "none", "--data-dir", data)
        assert code == 0 and "never" in out
        code, out, err = run(capsys, "limits", "schedule", "org", "hourly", "--data-dir", data)
        assert code == 2 and "reset_schedule 'hourly'" in err
        code, out, err = run(capsys, "limits", "reset", "missing", "--data-dir", data)
        assert code == 2 and "missing" in err
        code, out, _ = run(capsys, "limits", "list", "--data-dir", data)
        assert code == 0 and "jane" in out and "org" in out
