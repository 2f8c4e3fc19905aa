"""/physicians: the directory for specialists (read-only; admins edit under /admin/physicians)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from flask_login import current_user, login_required

from crm.directory.forms import DirectoryFilterForm
from crm.extensions import db
from crm.models import Physician
from crm.services import directory

bp = Blueprint("directory", __name__, url_prefix="/physicians")


@bp.before_request
@login_required
def require_login():
    """Staff only."""


@bp.get("")
def index():
    form = DirectoryFilterForm(request.args)
    form.validate()  # marks a filter value that is none of its choices (not applied: form.filters())
    filters = form.filters()
    today = directory.desk_today()
    page = db.paginate(directory.physician_select(filters, today), per_page=50, error_out=False)
    args = {k: v for k, v in vars(filters).items() if v and k != "active"}
    return render_template(
        "directory/index.html",
        form=form,
        page=page,
        args=args,
        today=today,
        registration_status=directory.registration_status,
    )


@bp.get("/<int:physician_id>")
def detail(physician_id: int):
    physician = db.session.get(Physician, physician_id) or abort(404)
    if not physician.active and not current_user.is_admin:
        abort(404)
    return render_template(
        "directory/detail.html",
        p=physician,
        today=directory.desk_today(),
        registration_status=directory.registration_status,
        # Opened from a lead's match list: a way back to that lead (a number only; nothing is looked up).
        from_lead=_lead_number(request.args.get("lead", "")),
    )


def _lead_number(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 12 else None
