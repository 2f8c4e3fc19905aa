"""The patient's calling window (default 09:00–20:00 local, no Sundays) in several zones, with DST."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from crm.services.calling_window import (
    WindowConfigError,
    is_allowed,
    make_window,
    next_allowed,
    parse_days,
    parse_local,
    window_from_config,
)

W = make_window()  # 09:00-20:00, Monday to Saturday


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("when", "tz", "allowed"),
    [
        (utc(2026, 7, 15, 13, 0), "America/New_York", True),  # 09:00 EDT: the window opens
        (utc(2026, 7, 15, 12, 59), "America/New_York", False),  # 08:59 EDT
        (utc(2026, 7, 16, 0, 0), "America/New_York", False),  # 20:00 EDT: closed (half-open window)
        (utc(2026, 7, 15, 23, 59), "America/New_York", True),  # 19:59 EDT
        # Arizona keeps MST all year: 16:00 UTC is 09:00 in July and in January.
        (utc(2026, 7, 15, 16, 0), "America/Phoenix", True),
        (utc(2026, 1, 14, 16, 0), "America/Phoenix", True),
        (utc(2026, 7, 15, 15, 59), "America/Phoenix", False),
        # Hawaii (UTC-10, no DST): 19:00 UTC = 09:00 HST; 06:00 UTC = 20:00 HST.
        (utc(2026, 7, 15, 19, 0), "Pacific/Honolulu", True),
        (utc(2026, 7, 16, 6, 0), "Pacific/Honolulu", False),
        (utc(2026, 7, 16, 5, 59), "Pacific/Honolulu", True),
        # Sunday 12:00 local is never allowed; Saturday is.
        (utc(2026, 7, 19, 16, 0), "America/New_York", False),
        (utc(2026, 7, 18, 16, 0), "America/New_York", True),
        # Monday 01:00 UTC is still Sunday evening in California.
        (utc(2026, 7, 20, 1, 0), "America/Los_Angeles", False),
    ],
)
def test_is_allowed(when, tz, allowed):
    assert is_allowed(when, tz, W) is allowed


def test_next_allowed_after_hours_is_the_next_morning_in_the_patients_zone():
    # 21:30 Tuesday in Honolulu -> Wednesday 09:00 HST (19:00 UTC).
    assert next_allowed(utc(2026, 7, 15, 7, 30), "Pacific/Honolulu", W) == utc(2026, 7, 15, 19, 0)
    # Early Wednesday in Phoenix -> 09:00 MST the same day.
    assert next_allowed(utc(2026, 7, 15, 12, 0), "America/Phoenix", W) == utc(2026, 7, 15, 16, 0)
    # An allowed time is returned unchanged.
    assert next_allowed(utc(2026, 7, 15, 18, 0), "America/New_York", W) == utc(2026, 7, 15, 18, 0)


def test_saturday_evening_skips_sunday_to_monday_morning():
    sat_evening = utc(2026, 7, 19, 1, 0)  # Sat 21:00 EDT
    assert next_allowed(sat_evening, "America/New_York", W) == utc(2026, 7, 20, 13, 0)  # Mon 09:00 EDT


def test_dst_change_moves_the_utc_opening():
    # US clocks go back on Sunday 2026-11-01: Saturday opens at 13:00 UTC (EDT), Monday at 14:00 UTC (EST).
    sat_night = utc(2026, 11, 1, 1, 0)  # Sat Oct 31, 21:00 EDT
    assert next_allowed(sat_night, "America/New_York", W) == utc(2026, 11, 2, 14, 0)
    assert is_allowed(utc(2026, 11, 2, 13, 30), "America/New_York", W) is False  # 08:30 EST
    assert is_allowed(utc(2026, 10, 31, 13, 30), "America/New_York", W) is True  # 09:30 EDT
    # Spring forward (Sunday 2026-03-08): Monday 09:00 EDT is 13:00 UTC, the Friday before it was 14:00 UTC.
    assert next_allowed(utc(2026, 3, 7, 2, 0), "America/New_York", W) == utc(2026, 3, 7, 14, 0)  # Sat 09:00 EST
    assert next_allowed(utc(2026, 3, 8, 12, 0), "America/New_York", W) == utc(2026, 3, 9, 13, 0)  # Mon 09:00 EDT
    # Arizona does not change: 09:00 MST stays 16:00 UTC across the same weekend.
    assert next_allowed(utc(2026, 3, 8, 12, 0), "America/Phoenix", W) == utc(2026, 3, 9, 16, 0)


def test_a_wall_time_skipped_by_dst_is_refused():
    with pytest.raises(ValueError, match="does not exist in America/New_York"):
        parse_local(datetime(2026, 3, 8, 2, 30), "America/New_York")
    assert parse_local(datetime(2026, 3, 8, 2, 30), "America/Phoenix") == utc(2026, 3, 8, 9, 30)
    assert parse_local(datetime(2026, 7, 15, 9, 0), "Pacific/Honolulu") == utc(2026, 7, 15, 19, 0)


def test_configuration_is_parsed_and_bad_values_are_refused():
    w = window_from_config({"CALLING_WINDOW": "08:30-18:00", "CALLING_DAYS": "mon-fri"})
    assert w.start == time(8, 30) and w.days == frozenset(range(5))
    assert w.describe() == "08:30–18:00, Mon–Fri"
    assert parse_days("sat,sun") == frozenset({5, 6})
    for bad in ("9-5", "20:00-09:00", ""):
        with pytest.raises(WindowConfigError):
            make_window(bad)
    for bad in ("funday", "fri-mon", ","):
        with pytest.raises(WindowConfigError):
            parse_days(bad)
    with pytest.raises(ValueError):
        next_allowed(datetime(2026, 7, 15, 12, 0), "America/New_York", W)  # naive


def test_unknown_zone_falls_back_instead_of_failing():
    assert is_allowed(utc(2026, 7, 15, 14, 0), "Mars/Olympus_Mons", W) is True  # read as New York


def test_closed_until_and_its_short_label():
    from crm.services.calling_window import closed_until, short_opening

    ny = "America/New_York"
    assert closed_until(utc(2026, 7, 15, 15, 0), ny, W) is None  # 11:00 EDT: open
    early = utc(2026, 7, 15, 11, 29)  # 07:29 EDT Wednesday
    opens = closed_until(early, ny, W)
    assert opens == utc(2026, 7, 15, 13, 0) and short_opening(opens, early, ny) == "9 AM"
    late_saturday = utc(2026, 7, 19, 1, 0)  # 21:00 EDT Saturday: Sunday is closed
    opens = closed_until(late_saturday, ny, W)
    assert short_opening(opens, late_saturday, ny) == "Mon 9 AM"
    half_past = make_window("09:30-20:00")
    assert short_opening(closed_until(early, ny, half_past), early, ny) == "9:30 AM"
