"""`payi-otel` without surprises: commands that read a store never create one, every error is one
line naming the option and the rule, `--version`, report ordering and filtering, safe output."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib import metadata

import httpx
import pytest
from service_support import read_only_store, running_service

from payi_otel.cli import main
from payi_otel.service.store.connection import resolve_database_url

GPT4O = {"category": "system.openai", "resource": "gpt-4o", "units": {"text": {"input": 100, "output": 10}}}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli(*argv, **kwargs):
    """The installed command in a fresh interpreter (what a user runs)."""
    return subprocess.run(
        [sys.executable, "-m", "payi_otel.cli", *argv], capture_output=True, text=True, timeout=60, **kwargs
    )


def one_line_error(result, *words):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback, no uvicorn log
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ("apps", "default-key"),
        ("apps", "list"),
        ("apps", "create", "x"),
        ("apps", "rotate", "default", "--key", "1"),
        ("report",),
        ("limits", "list"),
        ("limits", "create", "x", "--max", "1"),
    ],
)
def test_commands_reading_a_store_refuse_a_directory_without_one_and_create_nothing(
    tmp_path, capsys, argv, unmigrated_schema
):
    missing = tmp_path / "nowhere"
    on_sqlite = resolve_database_url() is None  # on PostgreSQL: a database without the store's tables
    code, out, err = run(capsys, *argv, "--data-dir", str(missing))
    assert code == 2 and out == ""
    if on_sqlite:
        assert f"no service data in {missing}; start `payi-otel serve` or pass --data-dir" in err
    else:
        assert "the database holds no payi-otel store; start `payi-otel serve` with it first" in err
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, *argv, "--data-dir", str(empty))
    assert code == 2 and ("no service data in" if on_sqlite else "holds no payi-otel store") in err
    assert list(empty.iterdir()) == []


def test_default_data_dir_is_named_when_it_has_no_store(tmp_path):
    result = cli("apps", "default-key", cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    one_line_error(result, "no service data in .payi-otel", "payi-otel serve", "--data-dir")
    assert not (tmp_path / ".payi-otel").exists()


def test_version():
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"payi-otel {metadata.version('payi-otel')}"


def test_serve_on_a_port_in_use_is_one_line_naming_the_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    one_line_error(result, f"--port {port}", "already in use")
    assert not (tmp_path / "d").exists()  # nothing created when it cannot listen


def test_serve_on_a_bad_host_is_one_line_naming_the_host(tmp_path):
    result = cli("serve", "--host", "no-such-host.invalid", "--port", "0", "--data-dir", str(tmp_path / "d"))
    one_line_error(result, "--host 'no-such-host.invalid'", "resolve")
    result = cli("serve", "--host", "192.0.2.1", "--port", "0", "--data-dir", str(tmp_path / "d"))
    one_line_error(result, "--host '192.0.2.1'", "not an address of this machine")


def test_serve_with_a_data_dir_that_is_a_file_is_one_line(tmp_path, sqlite_store):
    a_file = tmp_path / "data"
    a_file.write_text("not a directory")
    result = cli("serve", "--port", "0", "--data-dir", str(a_file))
    one_line_error(result, f"--data-dir {a_file}", "is a file, not a directory")
    result = cli("report", "--data-dir", str(a_file))
    one_line_error(result, f"--data-dir {a_file}", "is a file, not a directory")


@pytest.fixture(scope="module")
def two_apps(tmp_path_factory):
    d = tmp_path_factory.mktemp("report2")
    now = datetime.now(UTC).replace(hour=12)
    with running_service(d) as svc:
        from payi_otel.service.store import Store

        store = Store(d)
        try:
            _, other_key = store.create_application("other", "g")
        finally:
            store.close()
        for key, days, units, user in [
            (svc.api_key, 3, 10, "cheap-old"),
            (svc.api_key, 1, 1000, "dear-new"),
            (svc.api_key, 2, 100, '=HYPERLINK("http://evil","x")'),
            (other_key, 2, 5000, "other-user"),
        ]:
            when = (now - timedelta(days=days)).isoformat()
            event = {**GPT4O, "units": {"text": {"input": units}}, "event_timestamp": when}
            r = httpx.post(
                f"{svc.base_url}/api/v1/ingest",
                json=event,
                headers={"xProxy-api-key": key, "xProxy-User-ID": user.replace(" ", "")},
            )
            assert r.status_code == 200, r.text
        # a value stored by an older version (before names were checked) that would forge a row
        with read_only_store(d, write=True) as db:
            db.execute(
                "UPDATE requests SET account_name = ? WHERE user_id = 'cheap-old'",
                ("acme\nforged      999     1.000000\x1b[31m",),
            )
        db.close()
    return str(d)


def test_report_by_day_is_chronological(two_apps, capsys):
    _code, out, _ = run(capsys, "report", "--by", "day", "--format", "json", "--data-dir", two_apps)
    days = [r["group"]["day"] for r in json.loads(out)["rows"]]
    assert days == sorted(days) and len(days) == 3
    costs = [r["cost_usd"] for r in json.loads(out)["rows"]]
    assert costs != sorted(costs, reverse=True)  # so the order is by date, not by cost


def test_report_app_filter(two_apps, capsys):
    code, out, _ = run(capsys, "report", "--by", "user", "--app", "other", "--format", "json", "--data-dir", two_apps)
    assert [r["group"]["user"] for r in json.loads(out)["rows"]] == ["other-user"]
    code, out, _ = run(capsys, "report", "--app", "default", "--format", "json", "--data-dir", two_apps)
    assert json.loads(out)["total"]["requests"] == 3
    code, _, err = run(capsys, "report", "--app", "nope", "--data-dir", two_apps)
    assert code == 2 and "--app 'nope'" in err


def test_report_table_shows_control_characters_escaped(two_apps, capsys):
    code, out, _ = run(capsys, "report", "--by", "account", "--data-dir", two_apps)
    assert code == 0
    assert "\x1b" not in out
    assert "acme\\nforged" in out and "\\x1b[31m" in out
    assert not any(line.startswith("forged") for line in out.splitlines())


def test_report_csv_defuses_formulas(two_apps, capsys):
    _code, out, _ = run(capsys, "report", "--by", "user", "--format", "csv", "--data-dir", two_apps)
    users = [row["user"] for row in csv.DictReader(io.StringIO(out))]
    assert '\'=HYPERLINK("http://evil","x")' in users
    assert not any(u.startswith(("=", "+", "-", "@")) for u in users)


def test_a_database_url_that_is_not_postgresql_is_refused_naming_option_and_rule(tmp_path):
    result = cli("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--database-url", "mysql://db/x")
    one_line_error(result, "--database-url mysql://db/x", "must be a postgresql:// (or postgres://) URL")
    assert not (tmp_path / "d" / "payi.db").exists()
    result = cli(
        "report", "--data-dir", str(tmp_path / "d"), env={**os.environ, "PAYI_OTEL_DATABASE_URL": "sqlite:///x"}
    )
    one_line_error(result, "PAYI_OTEL_DATABASE_URL sqlite:///x", "must be a postgresql://")
