"""The patient's calling window: when a specialist may call (SPEC 7).

Pure functions over aware datetimes and IANA zone names (``zoneinfo``), so they
are DST-correct and testable without Flask. Defaults: 09:00-20:00 patient local
time, Monday to Saturday (``CALLING_WINDOW`` / ``CALLING_DAYS``).

The window is half open: 09:00 is allowed, 20:00 is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_WINDOW = "09:00-20:00"
DEFAULT_DAYS = "mon,tue,wed,thu,fri,sat"


class WindowConfigError(ValueError):
    """A CALLING_WINDOW / CALLING_DAYS (or BUSINESS_HOURS) value that cannot be read."""


@dataclass(frozen=True)
class Window:
    start: time
    end: time
    days: frozenset[int]  # 0 = Monday ... 6 = Sunday

    def describe(self) -> str:
        days = [DAY_NAMES[d].capitalize() for d in sorted(self.days)]
        span = f"{days[0]}–{days[-1]}" if _consecutive(sorted(self.days)) and len(days) > 2 else ", ".join(days)
        return f"{self.start:%H:%M}–{self.end:%H:%M}, {span}"


def _consecutive(days: list[int]) -> bool:
    return all(b - a == 1 for a, b in zip(days, days[1:], strict=False))


def parse_hours(spec: str) -> tuple[time, time]:
    """``"09:00-20:00"`` -> (09:00, 20:00); the start must come before the end."""
    try:
        start_s, end_s = (part.strip() for part in spec.split("-"))
        start, end = time.fromisoformat(start_s), time.fromisoformat(end_s)
    except ValueError as exc:
        raise WindowConfigError(f"hours must look like 09:00-20:00, got {spec!r}") from exc
    if start >= end:
        raise WindowConfigError(f"hours must start before they end, got {spec!r}")
    return start, end


def parse_days(spec: str) -> frozenset[int]:
    """``"mon,tue,sat"`` or ``"mon-fri,sun"`` -> weekday numbers (0 = Monday); empty is refused."""

    def day(name: str) -> int:
        key = name.strip().lower()[:3]
        if key not in DAY_NAMES:
            raise WindowConfigError(f"unknown day {name.strip()!r} in {spec!r} (use mon,tue,... or mon-fri)")
        return DAY_NAMES.index(key)

    days: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "-" in part:
            a, _, b = part.partition("-")
            first, last = day(a), day(b)
            if first > last:
                raise WindowConfigError(f"day range {part!r} runs backwards")
            days.update(range(first, last + 1))
        else:
            days.add(day(part))
    if not days:
        raise WindowConfigError("at least one day is needed")
    return frozenset(days)


@lru_cache(maxsize=64)
def make_window(hours: str = DEFAULT_WINDOW, days: str = DEFAULT_DAYS) -> Window:
    start, end = parse_hours(hours)
    return Window(start, end, parse_days(days))


def zone(name: str | None, fallback: str = "America/New_York") -> ZoneInfo:
    """A ZoneInfo for ``name``; an unknown or empty name gives ``fallback``."""
    for candidate in (name, fallback, "UTC"):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def zone_exists(name: str | None) -> bool:
    """True for a time zone name ``zone`` can use as it is (an empty one means the default)."""
    if not name:
        return True
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _local_at(day: date, t: time, tz: ZoneInfo) -> datetime:
    """The aware instant for wall time ``t`` on ``day`` in ``tz``.

    A wall time that does not exist (spring-forward gap) moves to the first
    instant after the gap; an ambiguous one (fall-back) takes the first occurrence.
    """
    naive = datetime.combine(day, t)
    local = naive.replace(tzinfo=tz, fold=0)
    back = local.astimezone(UTC).astimezone(tz)
    if back.replace(tzinfo=None) != naive:  # inside a gap: round-trip lands after it
        return back
    return local


def is_allowed(when: datetime, tz_name: str | None, window: Window) -> bool:
    """True when ``when`` (aware) falls inside the window in the patient's zone."""
    local = when.astimezone(zone(tz_name))
    return local.weekday() in window.days and window.start <= local.time() < window.end


def next_allowed(when: datetime, tz_name: str | None, window: Window) -> datetime:
    """``when`` itself if allowed, otherwise the next opening of the window (aware UTC)."""
    if when.tzinfo is None:
        raise ValueError("an aware datetime is needed")
    if is_allowed(when, tz_name, window):
        return when.astimezone(UTC)
    tz = zone(tz_name)
    local = when.astimezone(tz)
    for offset in range(0, 8):
        day = local.date() + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        opening = _local_at(day, window.start, tz)
        if opening > when:
            return opening.astimezone(UTC)
    raise AssertionError("a window with at least one day always opens within a week")


def closed_until(now: datetime, tz_name: str | None, window: Window) -> datetime | None:
    """None while the patient may be called; otherwise when the window next opens (aware UTC)."""
    opens = next_allowed(now, tz_name, window)
    return None if opens <= now else opens


def short_opening(opens: datetime, now: datetime, tz_name: str | None) -> str:
    """When a closed window opens, as short as a queue cell needs: "9 AM", "9:30 AM", "Mon 9 AM"."""
    local, today = opens.astimezone(zone(tz_name)), now.astimezone(zone(tz_name)).date()
    hour = f"{local:%I}".lstrip("0") + (f":{local:%M}" if local.minute else "") + f" {local:%p}"
    return hour if local.date() == today else f"{local:%a} {hour}"


def local_now(now: datetime, tz_name: str | None) -> datetime:
    return now.astimezone(zone(tz_name))


def parse_local(value: datetime, tz_name: str | None) -> datetime:
    """Read a naive wall-clock datetime typed by a user as a time in ``tz_name``.

    Raises ValueError for a wall time that does not exist there (the hour skipped
    when clocks go forward), so nobody books 02:30 on a spring-forward night.
    """
    tz = zone(tz_name)
    local = value.replace(tzinfo=tz, fold=0)
    back = local.astimezone(UTC).astimezone(tz)
    if back.replace(tzinfo=None) != value:
        raise ValueError(f"{value:%b %d %H:%M} does not exist in {tz.key} (the clocks change that night)")
    return local.astimezone(UTC)


def window_from_config(config) -> Window:
    """The calling window from a Flask config (or any mapping)."""
    return make_window(config.get("CALLING_WINDOW") or DEFAULT_WINDOW, config.get("CALLING_DAYS") or DEFAULT_DAYS)
