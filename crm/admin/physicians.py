"""/admin/physicians: the directory, create/edit, deactivate, CSV import with preview, export."""

from __future__ import annotations

import os
from datetime import datetime

import sqlalchemy as sa
from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm.admin.forms import CsvCommitForm, CsvUploadForm, PhysicianFilterForm, PhysicianForm
from crm.admin.routes import bp, saved_meanwhile
from crm.extensions import db
from crm.models import Condition, Physician
from crm.models.enums import GeocodeStatus
from crm.services import audit, directory, edit_guard, geocoding, physician_csv
from crm.services.calling_window import zone
from crm.services.contact import format_phone
from crm.services.geocoding import get_geocoder


def _filters_from_request() -> tuple[PhysicianFilterForm, directory.PhysicianFilters, dict]:
    form = PhysicianFilterForm(request.args)
    form.validate()  # marks a filter value that is none of its choices (not applied: form.filters())
    filters = form.filters()
    args = {k: v for k, v in vars(filters).items() if v}
    if "active" not in request.args:
        args.pop("active", None)
    else:
        args["active"] = filters.active
    return form, filters, args


@bp.get("/physicians")
def physicians():
    form, filters, args = _filters_from_request()
    today = directory.desk_today()
    page = db.paginate(directory.physician_select(filters, today), per_page=50, error_out=False)
    if page.pages and page.page > page.pages:  # past the end (an old link, a typed ?page=99): the last page
        return redirect(url_for("admin.physicians", **args, page=page.pages))
    return render_template(
        "admin/physicians/list.html",
        form=form,
        page=page,
        args=args,
        # The export holds what the list shows: its Active filter too, the default "yes" included.
        export_args={**args, "active": filters.active},
        today=today,
        expiry=directory.expiry_summary(today),
        soonest=directory.expiring_registrations(today, limit=8),
        unlocated=directory.unlocated_count(),
        registration_status=directory.registration_status,
    )


def _condition_choices() -> list[tuple[str, str]]:
    return [(c.slug, c.name) for c in db.session.scalars(sa.select(Condition).order_by(sa.func.lower(Condition.name)))]


def _form_data(p: Physician) -> dict:
    return {
        "npi": p.npi,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "credential": str(p.credential),
        "practice_name": p.practice_name,
        "street": p.street,
        "city": p.city,
        "state": p.state,
        "zip": p.zip,
        "phone": format_phone(p.phone),
        "email": p.email,
        "website": p.website,
        "offers_in_person": p.offers_in_person,
        "offers_telehealth": p.offers_telehealth,
        "accepting_new": p.accepting_new,
        "languages": "; ".join(p.languages or []),
        "conditions": [c.slug for c in p.conditions],
        "priority": str(p.priority),
        "weekly_capacity": p.weekly_capacity,
        "latitude": "" if p.latitude is None else f"{p.latitude:.6f}",
        "longitude": "" if p.longitude is None else f"{p.longitude:.6f}",
        "notes": p.notes,
        "registrations": [{"state": r.state, "number": r.number, "expires_on": r.expires_on} for r in p.registrations],
        "loaded": edit_guard.token(directory.edit_snapshot(p)),
    }


def _npi_taken(npi: str, exclude_id: int | None) -> Physician | None:
    stmt = sa.select(Physician).where(Physician.npi == directory.clean_npi(npi))
    if exclude_id is not None:
        stmt = stmt.where(Physician.id != exclude_id)
    return db.session.scalar(stmt)


def _npi_added_meanwhile(form: PhysicianForm, exc: IntegrityError) -> None:
    """The unique NPI refused this save: the same physician was saved a moment ago (a double click
    on Add, two admins, an import). Nothing is saved; the form says who holds the NPI now."""
    db.session.rollback()
    if "npi" not in str(exc.orig).lower():
        raise exc
    other = _npi_taken(form.npi.data, None)
    holder = f"{other.full_name} (#{other.id})" if other is not None else "another physician"
    form.npi.errors = [f"NPI {form.npi.data} was saved a moment ago for {holder}: open them from the list."]
    return None


def _save(form: PhysicianForm, physician: Physician | None):
    """Validate, save, audit and commit; returns the saved physician or None (errors are on the form)."""
    if not form.validate_on_submit():
        return None
    if physician is not None and saved_meanwhile(form, physician, directory.edit_snapshot, "physician"):
        return None
    other = _npi_taken(form.npi.data, physician.id if physician else None)
    if other is not None:
        form.npi.errors = [f"NPI {other.npi} already belongs to {other.full_name} (#{other.id})."]
        return None
    before = directory.physician_data(physician) if physician is not None else None
    try:
        data = form.to_data(active=physician.active if physician else True)
        result = directory.save_physician(
            data,
            physician,
            coordinates_are_authoritative=False,
            geocode_after_commit=directory.geocoder_is_online(current_app.config),
        )
    except ValueError as exc:
        db.session.rollback()
        flash(f"Not saved: {exc}", "danger")
        return None
    except IntegrityError as exc:
        return _npi_added_meanwhile(form, exc)
    locating = result.geocoded is not None or result.locate_after_commit
    if not result.created and not result.changes and not locating:
        flash("Nothing changed.", "info")
        return result.physician
    detail = {"fields": result.changes + (["geocoded"] if locating else [])}
    if before is not None and result.changes:
        detail["changes"] = directory.physician_changes(before, data, result.changes)
    audit.record(
        "create_physician" if result.created else "update_physician", "physician", result.physician.id, detail=detail
    )
    try:
        db.session.commit()
    except IntegrityError as exc:
        return _npi_added_meanwhile(form, exc)
    p = result.physician
    geocoded = result.geocoded
    if result.locate_after_commit:
        # An online geocoder: asked now that the save is committed, so nothing waits on its answer.
        geocoded = directory.locate_saved_physician(p.id, current_app.config)
        p = db.session.get(Physician, p.id)
    note = ""
    if geocoded is None and result.locate_after_commit:
        note = " Its address is being located; the physician is matched by distance once it is."
    elif geocoded is True:
        note = f" Located at {p.latitude:.4f}, {p.longitude:.4f} ({p.geocode_precision})."
    elif geocoded is False and p.geocode_status == GeocodeStatus.PENDING:
        note = (
            " The geocoder is unavailable right now; the address is tried again automatically. Until it is "
            "located the physician is not matched by distance."
        )
    elif geocoded is False:
        where = (
            f"The address could only be placed somewhere in {p.state} (is the ZIP right?)"
            if p.geocode_error == geocoding.STATE_ONLY
            else "The address could not be located"
        )
        note = (
            f" {where}: fix it, or enter latitude and longitude. Until then the physician is not matched by "
            "distance (telehealth still lists them)."
        )
    flash(
        f"{'Added' if result.created else 'Saved'} {p.full_name}.{note}",
        "success" if geocoded is not False else "warning",
    )
    # Saved as asked (a physician between practices, a record kept for history), but never matched: said.
    unmatchable = []
    if not (p.offers_in_person or p.offers_telehealth):
        unmatchable.append("offers neither in-person nor telehealth visits")
    if not p.registrations:
        unmatchable.append("has no state registration (a physician certifies only where registered)")
    if unmatchable and p.active:
        flash(
            f"{p.full_name} {' and '.join(unmatchable)}: no patient is matched to them until that changes.", "warning"
        )
    # Saved all the same (an admin may record history), but it does not count for matching.
    expired = directory.expired_registrations(data, before)
    if expired:
        flash(f"Registration {directory.expired_warning(expired)}.", "warning")
    return p


@bp.route("/physicians/new", methods=["GET", "POST"])
def physician_new():
    form = PhysicianForm()
    form.conditions.choices = _condition_choices()
    if request.method == "GET":
        for _ in range(2):
            form.registrations.append_entry()
    saved = _save(form, None) if request.method == "POST" else None
    if saved is not None:
        return redirect(url_for("admin.physician_edit", physician_id=saved.id))
    return render_template("admin/physicians/form.html", form=form, physician=None, today=directory.desk_today())


@bp.route("/physicians/<int:physician_id>/edit", methods=["GET", "POST"])
def physician_edit(physician_id: int):
    physician = db.session.get(Physician, physician_id) or abort(404)
    form = PhysicianForm() if request.method == "POST" else PhysicianForm(data=_form_data(physician))
    form.conditions.choices = _condition_choices()
    if request.method == "GET":
        form.registrations.append_entry()
    if request.method == "POST":
        saved = _save(form, physician)
        if saved is not None:
            return redirect(url_for("admin.physician_edit", physician_id=saved.id))
    upcoming, upcoming_total = directory.upcoming_appointments(physician)
    return render_template(
        "admin/physicians/form.html",
        form=form,
        physician=physician,
        registration_status=directory.registration_status,
        today=directory.desk_today(),
        upcoming=upcoming,
        upcoming_total=upcoming_total,
    )


@bp.post("/physicians/<int:physician_id>/deactivate")
def physician_deactivate(physician_id: int):
    physician = db.session.get(Physician, physician_id) or abort(404)
    if directory.set_physician_active(physician, False):
        audit.record("deactivate_physician", "physician", physician.id)
        db.session.commit()
        _, upcoming = directory.upcoming_appointments(physician)
        one = upcoming == 1
        note = (
            f" Their {upcoming} upcoming appointment{'' if one else 's'} {'stays' if one else 'stay'} booked: rebook "
            f"or cancel {'it' if one else 'them'} from the lead{'' if one else 's'} listed below."
            if upcoming
            else ""
        )
        flash(
            f"{physician.full_name} is deactivated: no longer matched or listed for specialists.{note}",
            "warning" if upcoming else "success",
        )
    return redirect(url_for("admin.physician_edit", physician_id=physician.id))


@bp.post("/physicians/<int:physician_id>/reactivate")
def physician_reactivate(physician_id: int):
    physician = db.session.get(Physician, physician_id) or abort(404)
    if directory.set_physician_active(physician, True):
        audit.record("reactivate_physician", "physician", physician.id)
        db.session.commit()
        flash(f"{physician.full_name} is active again.", "success")
    return redirect(url_for("admin.physician_edit", physician_id=physician.id))


@bp.get("/physicians/export.csv")
def physicians_export():
    _, filters, args = _filters_from_request()
    if "active" not in request.args:
        filters.active = ""  # the export holds every physician unless asked otherwise
    stmt = directory.physician_select(filters)
    # Audited (with the count) before the first byte, so a download broken off midway is on record too.
    audit.record("export", "physician", None, detail={"rows": physician_csv.export_count(stmt), "filters": args})
    db.session.commit()
    # The admin's own clock in the file name: the export they took "at 12:36" is named 1236.
    stamp = datetime.now(zone(current_user.timezone, current_app.config["BUSINESS_TIMEZONE"])).strftime("%Y%m%d-%H%M")
    # Streamed: 100,000 physicians are about 25 MB of CSV, never held whole in a worker's memory.
    # The pieces are read through a session of their own while the body is sent: the request and
    # its session are over by then.
    engine = db.engine

    def pieces():
        yield "\ufeff".encode()  # a BOM, as on every CSV meant for Excel: accented names stay readable
        with Session(engine) as session:
            for piece in physician_csv.export_chunks(stmt, session=session):
                yield piece.encode("utf-8")

    return Response(
        pieces(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="physicians-{stamp}.csv"'},
    )


WEB_IMPORT_MAX_LINES = 5_000


def _upload_folder() -> str:
    return current_app.config.get("UPLOAD_FOLDER") or os.path.join(current_app.instance_path, "uploads")


@bp.route("/physicians/import", methods=["GET", "POST"])
def physicians_import():
    form = CsvUploadForm()
    if form.validate_on_submit():
        data = form.file.data.read()
        report = physician_csv.plan_import(data, geocode_later=_geocode_later())
        if not report.file_error and len(report.lines) > WEB_IMPORT_MAX_LINES:
            # Writing 10,000 lines takes 15-50 s: longer than a worker may take over a request, and a
            # worker stopped midway saves nothing. The command has no such limit.
            report.file_error = (
                f"This file has {len(report.lines):,} lines; the import here takes at most "
                f"{WEB_IMPORT_MAX_LINES:,} at a time. Split it into smaller files, or run "
                "`flask crm physicians import FILE` on the server, which takes any size."
            )
        token = None
        if not report.file_error:
            token = physician_csv.store_upload(_upload_folder(), current_user.id, data)
        audit.record("import_preview", "physician", None, detail={"counts": report.counts, "file": bool(token)})
        db.session.commit()
        return render_template(
            "admin/physicians/import.html",
            form=form,
            report=report,
            commit_form=CsvCommitForm(token=token),
            filename=form.file.data.filename,
        )
    return render_template("admin/physicians/import.html", form=form, report=None, columns=physician_csv.COLUMNS)


def _geocode_later() -> bool:
    """An online geocoder answers about once a second: a file of new addresses would outlast the
    request, so the geocode_retry job locates them. The offline one is instant: done in line."""
    return not get_geocoder(current_app.config).deterministic


@bp.post("/physicians/import/errors.csv")
def physicians_import_errors():
    """The previewed file's refused lines with their reasons, to fix in a spreadsheet and upload again."""
    form = CsvCommitForm()
    token = form.token.data if form.validate_on_submit() else None
    data = physician_csv.load_upload(_upload_folder(), current_user.id, token) if token else None
    if data is not None:
        lines = physician_csv.error_lines_csv(data)
    else:  # the refused lines of an import already committed (its result page), if still kept
        lines = physician_csv.load_error_lines(_upload_folder(), current_user.id, token) if token else None
    if lines is None:
        flash("That upload was already imported or has expired. Upload the file again.", "warning")
        return redirect(url_for("admin.physicians_import"))
    return Response(
        "\ufeff" + lines,  # a BOM: Excel then reads the names' accents as UTF-8
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="physicians-lines-with-errors.csv"'},
    )


@bp.post("/physicians/import/commit")
def physicians_import_commit():
    form = CsvCommitForm()
    token = form.token.data if form.validate_on_submit() else None
    data = physician_csv.load_upload(_upload_folder(), current_user.id, token) if token else None
    if data is None:
        flash("That upload was already imported or has expired. Upload the file again.", "warning")
        return redirect(url_for("admin.physicians_import"))
    # Validated again: the directory may have changed since the preview.
    report = physician_csv.import_csv(data, geocode_later=_geocode_later())
    db.session.commit()
    physician_csv.discard_upload(_upload_folder(), current_user.id, token)
    # The upload is gone, but its refused lines (write-time refusals too) stay downloadable from the result.
    errors_token = None
    if report.errors:
        lines = physician_csv.error_lines_csv(data, report)
        if lines is not None:
            errors_token = physician_csv.store_error_lines(_upload_folder(), current_user.id, lines)
    flash(report.summary(), "success" if report.ok else "warning")
    return render_template(
        "admin/physicians/import.html",
        form=CsvUploadForm(),
        report=report,
        committed=True,
        commit_form=CsvCommitForm(formdata=None, token=errors_token),  # not the posted token
    )
