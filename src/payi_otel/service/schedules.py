"""Reset schedules of limits: ``daily``, ``weekly``, ``monthly`` (calendar boundaries in UTC) or a period.

A period is an ISO 8601 duration (``PT6H``, ``P7D``, ``P1DT12H``) counted from an anchor (the time
the schedule was set), so its resets fall at anchor + k x period. Calendar schedules reset at
midnight UTC: every day, every Monday, or on the first day of every month.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter, ValidationError

CALENDAR = ("daily", "weekly", "monthly")
RULE = (
    "must be daily, weekly, monthly or an ISO 8601 duration of at least one minute (PT6H, P7D), or null for no schedule"
)
_DURATION = TypeAdapter(timedelta)
_MIN_PERIOD = timedelta(minutes=1)


class ScheduleError(ValueError):
    """A reset schedule that breaks :data:`RULE`."""


def normalize(text: str) -> str:
    """The canonical spelling of a schedule (lower-case names, upper-case durations); raises ScheduleError."""
    value = text.strip()
    if value.lower() in CALENDAR:
        return value.lower()
    period = _period(value)
    if period is None:
        raise ScheduleError(f"reset_schedule {text!r} {RULE}")
    return value.upper()


def _period(value: str) -> timedelta | None:
    if not value.upper().startswith("P"):
        return None
    try:
        period = _DURATION.validate_python(value.upper())
    except ValidationError:
        return None
    return period if period >= _MIN_PERIOD else None


def next_reset(schedule: str, after_ms: int, anchor_ms: int) -> int:
    """The first reset of ``schedule`` strictly after ``after_ms`` (epoch ms, UTC)."""
    after = datetime.fromtimestamp(after_ms / 1000, UTC)
    midnight = after.replace(hour=0, minute=0, second=0, microsecond=0)
    if schedule == "daily":
        boundary = midnight + timedelta(days=1)
    elif schedule == "weekly":
        boundary = midnight + timedelta(days=7 - midnight.weekday())
    elif schedule == "monthly":
        first = midnight.replace(day=1)
        boundary = (
            first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
        )
    else:
        period = _period(schedule)
        if period is None:
            raise ScheduleError(f"reset_schedule {schedule!r} {RULE}")
        period_ms = int(period.total_seconds() * 1000)
        periods = (after_ms - anchor_ms) // period_ms + 1 if after_ms >= anchor_ms else 0
        return anchor_ms + max(periods, 1) * period_ms
    return int(boundary.timestamp() * 1000)
