"""``payi-otel limits``: create, list, schedule, reset limits and show their history, on the data directory.

Like ``apps``, it works on the service's SQLite file directly (local administration), also while the
service runs: the service reads limits, schedules included, from the file on every use.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from payi_otel.service.store import Store

RULE_HELP = "daily, weekly, monthly, an ISO 8601 duration (PT6H, P7D), or none"


def add_parser(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    limits = sub.add_parser("limits", help="manage limits: create, list, reset schedules, reset, history")
    actions = limits.add_subparsers(dest="limits_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--app", default="default", help="application the limit belongs to (default: default)")
        add_data_dir(p)
        return p

    create = common(actions.add_parser("create", help="create an allow or block limit and print its id"))
    create.add_argument("name")
    create.add_argument("--max", type=float, required=True, help="USD")
    create.add_argument("--type", choices=("allow", "block"), default="allow")
    create.add_argument("--threshold", type=float, default=1.0, help="fraction of max (0 < t <= 1, default 1)")
    create.add_argument("--id", help="limit id (default: generated)")
    create.add_argument("--reset", metavar="SCHEDULE", help=f"reset schedule: {RULE_HELP}")
    lst = common(actions.add_parser("list", help="limits with spend against max, state and next reset"))
    lst.add_argument("--format", choices=("table", "json"), default="table")
    schedule = common(actions.add_parser("schedule", help="set or remove a limit's reset schedule"))
    schedule.add_argument("limit_id")
    schedule.add_argument("schedule", metavar="SCHEDULE", help=RULE_HELP)
    reset = common(actions.add_parser("reset", help="reset a limit now (its totals are kept in its history)"))
    reset.add_argument("limit_id")
    history = common(actions.add_parser("history", help="the snapshots kept by a limit's resets"))
    history.add_argument("limit_id")
    history.add_argument("--format", choices=("table", "json"), default="table")


def run(args: argparse.Namespace, open_store: Callable[[], Store], usage_error: type[Exception]) -> int:
    """``open_store`` opens the data directory's existing store (it never creates one)."""
    from payi_otel.service import schedules
    from payi_otel.service.report_render import render_limits_table
    from payi_otel.service.reports import limit_summary
    from payi_otel.service.store import StoreError, new_id

    now = int(time.time() * 1000)
    store = open_store()
    try:
        app = store.application(args.app)
        action = args.limits_command
        if action == "create":
            if not 0 < args.threshold <= 1:
                raise usage_error(f"--threshold {args.threshold}: must be more than 0 and at most 1")
            if not args.max > 0:
                raise usage_error(f"--max {args.max}: must be more than 0")
            limit = store.create_limit(
                app.id,
                limit_id=args.id or new_id(),
                limit_name=args.name,
                max_=args.max,
                limit_type=args.type,
                threshold=args.threshold,
                properties=None,
                reset_schedule=schedules.normalize(args.reset) if args.reset else None,
                now_ms=now,
            )
            print(limit.limit_id)
        elif action == "list":
            rows = [limit_summary(name, limit) for name, limit in store.all_limits() if name == app.name]
            if args.format == "json":
                print(json.dumps(rows, indent=2))
            else:
                print(render_limits_table(rows, sys.stdout.isatty()) if rows else "no limits")
        elif action == "schedule":
            off = args.schedule.strip().lower() == "none"
            limit = store.update_limit(
                app.id,
                args.limit_id,
                limit_name=None,
                max_=None,
                reset_schedule=None if off else schedules.normalize(args.schedule),
                clear_schedule=off,
                now_ms=now,
            )
            print(f"{limit.limit_id}: next reset {_iso(limit.next_reset_ms) or 'never (no schedule)'}")
        elif action == "reset":
            record = store.reset_limit(app.id, args.limit_id, reset_ms=now)
            print(
                f"{record.limit_id}: reset; kept {record.totals['requests']['total']} requests, "
                f"{record.totals['cost']['total']['base']} USD in its history"
            )
        else:
            if store.limit(app.id, args.limit_id) is None:
                raise StoreError(f"no limit with limit_id {args.limit_id!r} in application {app.name!r}")
            items = [
                {
                    "reset": _iso(r.reset_ms),
                    "trigger": r.trigger,
                    "spend_usd": r.totals["cost"]["total"]["base"],
                    "requests": r.totals["requests"]["total"],
                    "max_usd": r.max,
                }
                for r in store.limit_history(app.id, args.limit_id)
            ]
            if args.format == "json":
                print(json.dumps(items, indent=2))
            else:
                for item in items:
                    print(
                        f"{item['reset']}  {item['trigger']:<8}  {item['spend_usd']:.6f} USD of "
                        f"{item['max_usd']}  {item['requests']} requests"
                    )
    except (StoreError, schedules.ScheduleError) as exc:
        raise usage_error(str(exc)) from None
    finally:
        store.close()
    return 0


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
