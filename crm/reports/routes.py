"""/reports: admins only (SPEC 1, docs/decisions.md "Roles"). Numbers come from crm.services.reports."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask_login import login_required

from crm.extensions import db
from crm.reports.forms import ReportRangeForm
from crm.security import admin_required
from crm.services import audit, charts, report_rollups, reports, sla

bp = Blueprint("reports", __name__, url_prefix="/reports")
log = logging.getLogger(__name__)

# How long a page waits for a refresh running elsewhere (normally milliseconds; the first build of
# a big database takes minutes) before it answers from the live tables instead.
REFRESH_WAIT_SECONDS = 5

# The chart SVGs carry their own <style> (pygal) and no script; as images they cannot run
# anything, but a CSP on the SVG response itself must still allow that inline style.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"


@bp.before_request
@login_required
@admin_required
def require_admin():
    """Reports are for admins."""


def _desk_tz() -> str:
    return current_app.config.get("BUSINESS_TIMEZONE") or "America/New_York"


def _bad_range(form: ReportRangeForm) -> Response:
    """The 400 of a CSV or chart URL: the reason in words (docs/reports.md "Range and time zone")."""
    problems = "; ".join(e for errs in form.errors.values() for e in errs)
    return Response(f"Bad date range: {problems}\n", status=400, mimetype="text/plain")


def _range_from_request() -> tuple[ReportRangeForm, reports.ReportRange, bool]:
    tz = _desk_tz()
    today = reports.today_in(tz)
    form = ReportRangeForm(request.args)
    ok = form.validate_range(today)
    return form, form.report_range(today, tz), ok


def _counts():
    """Counts for this request: the rollups, brought up to date first (so they equal the live
    tables now); the live tables themselves if another refresh holds the lock too long."""
    tz = _desk_tz()
    try:
        done = report_rollups.refresh_report_rollups(
            db.session, datetime.now(UTC), tz, wait_seconds=REFRESH_WAIT_SECONDS
        )
    except report_rollups.RefreshBusy:
        db.session.rollback()
        log.warning("report rollups busy: answering from the live tables")
        return reports.LiveCounts(db.session)
    if done.ran:
        db.session.commit()  # release the refresh lock before reading
    return report_rollups.RollupCounts(db.session, tz)


def _range_args(rng: reports.ReportRange) -> dict:
    return {"from": rng.start.isoformat(), "to": rng.end.isoformat()}


@bp.get("")
def index():
    form, rng, ok = _range_from_request()
    report = reports.build_report(db.session, rng, _counts())
    args = _range_args(rng)
    if ok:  # show the range actually used
        form.date_from.data, form.date_to.data = rng.start, rng.end
    target = sla.SlaConfig.from_config(current_app.config)
    html = render_template(
        "reports/index.html",
        form=form,
        report=report,
        args=args,
        tables=reports.TABLES,
        tz=rng.tz,
        ok=ok,
        cut_to=form.cut_to if ok else None,
        max_days=reports.MAX_RANGE_DAYS,
        sla_minutes=target.minutes,
        business_hours=target.describe(),
    )
    return html, (200 if ok else 400)


@bp.get("/chart/<name>.svg")
def chart(name: str):
    form, rng, ok = _range_from_request()
    if not ok:
        return _bad_range(form)
    if name == "leads-per-day":
        svg = charts.leads_per_day_svg(reports.leads_per_day(db.session, rng, _counts()))
    elif name == "funnel":
        svg = charts.funnel_svg(reports.funnel(db.session, rng, _counts()).rows())
    else:
        abort(404)
    resp = Response(svg, mimetype="image/svg+xml")
    resp.headers["Content-Security-Policy"] = SVG_CSP
    return resp


@bp.get("/export/<name>.csv")
def export(name: str):
    if name not in reports.TABLES:
        abort(404)
    form, rng, ok = _range_from_request()
    if not ok:
        return _bad_range(form)
    header, rows = reports.table(db.session, rng, name, _counts())
    audit.record(
        "export",
        "report",
        name,
        detail={"table": name, "from": rng.start.isoformat(), "to": rng.end.isoformat(), "rows": len(rows)},
    )
    db.session.commit()
    filename = f"report-{name}-{rng.start.isoformat()}-to-{rng.end.isoformat()}.csv"
    return Response(
        reports.to_csv(header, rows),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
