"""The date-range filter of /reports (GET, so no CSRF token)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask_wtf import FlaskForm
from wtforms import DateField

from crm.services.reports import MAX_RANGE_DAYS, ReportRange, default_range

EARLIEST = date(2000, 1, 1)


class ReportRangeForm(FlaskForm):
    class Meta:
        csrf = False

    # The query parameters are ``from`` and ``to`` (a Python keyword, hence name=).
    date_from = DateField("From", name="from", format="%Y-%m-%d")
    date_to = DateField("To", name="to", format="%Y-%m-%d")

    # Set by ``report_range`` when only "from" was given and "up to today" would be more than
    # MAX_RANGE_DAYS: the day the range was cut to (the page says so), else None.
    cut_to: date | None = None

    def report_range(self, today: date, tz: str) -> ReportRange:
        """The range asked for, or the default one; call after ``validate_range``."""
        self.cut_to = None
        default = default_range(today, tz)
        start, end = self.date_from.data, self.date_to.data
        if self.errors or not (start or end):
            return default
        if start and end:
            return ReportRange(start, end, tz)
        if end:  # only "to": the 30 days ending there
            return ReportRange(end - (default.end - default.start), end, tz)
        # Only "from": up to today, but at most MAX_RANGE_DAYS (a start in the future: that one day).
        longest = start + timedelta(days=MAX_RANGE_DAYS - 1)
        if today > longest:
            self.cut_to = longest
        return ReportRange(start, max(start, min(today, longest)), tz)

    def validate_range(self, today: date) -> bool:
        """Field errors in words; missing fields fall back to the default range."""
        for f in (self.date_from, self.date_to):
            f.errors = []
            raw = (f.raw_data or [""])[0].strip() if f.raw_data else ""
            if not raw:
                f.data = None
                continue
            try:
                f.data = datetime.strptime(raw, "%Y-%m-%d").date()
            except ValueError:
                f.data = None
                f.errors.append(f"“{raw[:40]}” is not a date: use YYYY-MM-DD, e.g. {today.isoformat()}.")
                continue
            if not EARLIEST <= f.data <= date(today.year + 1, 12, 31):
                f.errors.append(f"Pick a date between {EARLIEST.isoformat()} and the end of next year.")
        start, end = self.date_from.data, self.date_to.data
        if not self.date_from.errors and not self.date_to.errors and start and end:
            if start > end:
                self.date_to.errors.append("The end date is before the start date.")
            elif (end - start).days + 1 > MAX_RANGE_DAYS:
                self.date_to.errors.append(f"Pick at most {MAX_RANGE_DAYS} days.")
        return not self.errors

    @property
    def errors(self):
        return {f.name: f.errors for f in (self.date_from, self.date_to) if f.errors}
