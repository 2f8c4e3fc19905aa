"""The specialist's queue, the lead workspace and notifications.

Routes stay thin: parse the form, call a service in crm/services/, commit once,
redirect (or re-render with the typed values kept). Every form that changes a
lead carries its version; a stale one gets the conflict message (HTTP 409).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from jinja2 import TemplateNotFound
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.exc import StaleDataError

from crm.errors import wants_json
from crm.extensions import db
from crm.form_filters import filter_value
from crm.leads import forms as lead_forms
from crm.models import (
    Appointment,
    Condition,
    FollowUp,
    Lead,
    LeadEvent,
    Notification,
    Patient,
    User,
    WebhookSource,
)
from crm.models.enums import LIVE_APPOINTMENT, EventKind, LeadStatus, VisitMode
from crm.services import audit, booking, directory, followups, matching, patient_details, routing, workflow
from crm.services.calling_window import (
    closed_until,
    is_allowed,
    local_now,
    next_allowed,
    parse_local,
    short_opening,
    window_from_config,
    zone,
)
from crm.services.contact import US_STATES
from crm.services.eligibility import age_on
from crm.services.leads_query import VIEWS, Filters, QueuePage, SearchError, phone_suffix, queue_page
from crm.services.notifications import notify
from crm.services.sla import SlaConfig, sla_state

bp = Blueprint("leads", __name__)

CONFLICT = "This lead was changed by {who} while you were editing; your change was not saved — review and try again."


class Conflict(Exception):
    pass


@bp.get("/")
@login_required
def home():
    return redirect(url_for("leads.queue"))


# --- queue ---------------------------------------------------------------------------


def _filter_form(view: str) -> lead_forms.QueueFilterForm:
    form = lead_forms.QueueFilterForm(request.args)
    form.status.choices = lead_forms.status_choices(open_only=view != "all")
    form.state.choices = [("", "Any state")] + [(s, s) for s in sorted(US_STATES)]
    conditions = db.session.execute(
        sa.select(Condition.id, Condition.name).order_by(sa.func.lower(Condition.name))
    ).all()
    form.condition.choices = [("", "Any condition")] + [(str(i), n) for i, n in conditions]
    sources = db.session.scalars(sa.select(WebhookSource).order_by(WebhookSource.name)).all()
    form.source.choices = lead_forms.source_choices(sources)
    # Inactive users still holding open leads are listed too, so those leads can be found and reassigned.
    holds_open = sa.exists().where(Lead.assignee_id == User.id, Lead.status.in_(routing.OPEN))
    people = db.session.execute(
        sa.select(User.id, User.name, User.active).where(sa.or_(User.active.is_(True), holds_open)).order_by(User.name)
    ).all()
    form.assignee.choices = [("", "Anyone"), ("me", "Me"), ("none", "Unassigned")] + [
        (str(i), n if active else f"{n} (inactive)") for i, n, active in people
    ]
    return form


@bp.get("/queue")
@login_required
def queue():
    view = request.args.get("view", "unassigned")
    if view not in VIEWS:
        view = "unassigned"
    form = _filter_form(view)
    form.validate()  # an invalid filter is shown with its error and ignored; the others still apply
    condition = filter_value(form.condition)
    f = Filters(
        status=filter_value(form.status),
        state=filter_value(form.state),
        condition_id=int(condition) if condition else None,
        source=filter_value(form.source),
        assignee=filter_value(form.assignee) if view in ("all", "due") else None,
        created_from=None if form.range_reversed() else filter_value(form.created_from),
        created_to=filter_value(form.created_to),
        q=(filter_value(form.q) or "").strip() or None,
    )
    page_no = request.args.get("page", 1, type=int) or 1
    now = datetime.now(UTC)
    try:
        page = queue_page(db.session, view, current_user, f, page=page_no, now=now)
    except SearchError as exc:
        # Nothing is listed: the whole queue under "type the full number" would read as its results.
        form.q.errors = [str(exc)]
        page = QueuePage(items=[], page=1, per_page=1, has_next=False, total=0)
    cfg = SlaConfig.from_config(current_app.config)
    sla = {lead.id: sla_state(lead, now, cfg) for lead in page.items}
    window = window_from_config(current_app.config)
    # Whom a call may reach now: a patient outside the calling window shows when it opens.
    zones = {lead.id: followups.zone_of(lead.patient.timezone, lead.patient.zip) for lead in page.items}
    closed = {lead_id: closed_until(now, zone, window) for lead_id, zone in zones.items() if zone}
    args = {k: v for k, v in request.args.items(multi=False) if k != "page" and v}
    args["view"] = view
    html = render_template(
        "leads/queue.html",
        page=page,
        view=view,
        form=form,
        args=args,
        sla=sla,
        closed=closed,
        zones=zones,
        window=window,
        short_opening=short_opening,
        phone_ending=None if form.q.errors else phone_suffix(f.q),
        now=now,
        filters_active=f.active() and not (f.q and len([v for v in f.__dict__.values() if v]) == 1),
        narrowed=f.active(),
    )
    # Every list of patients is a view of patient data (SPEC 12): which leads this page showed.
    # Audited after rendering: the commit would expire the rows the template reads.
    shown = audit.lead_list(lead.id for lead in page.items)
    detail = {"view": view, "page": page.page, "results": len(page.items), "leads": shown}
    audit.record("search_leads" if f.q else "view_queue", "lead", None, detail=detail)
    db.session.commit()
    return html


@bp.post("/queue/next")
@login_required
def get_next():
    window = window_from_config(current_app.config)
    lead = routing.claim_next(current_user._get_current_object(), window=window)
    if lead is None:
        db.session.rollback()
        if wants_json():
            return jsonify({"error": "No unassigned lead is waiting."}), 404
        # Booked leads are not handed out as "next" (their call is done), but one without an
        # owner still needs someone to record its visit: say so rather than "nothing waiting".
        booked = routing.unowned_booked_count()
        if booked:
            flash(
                f"No lead is waiting to be called. {booked} booked lead{'s have' if booked != 1 else ' has'} "
                "no owner: take one from Unassigned to record how the visit went.",
                "info",
            )
            return redirect(url_for("leads.queue", view="unassigned"))
        flash("No unassigned lead is waiting. Nice work.", "info")
        return redirect(url_for("leads.queue", view="mine"))
    db.session.commit()
    if wants_json():
        return jsonify({"lead_id": lead.id, "url": url_for("leads.detail", lead_id=lead.id)})
    flash(f"Lead #{lead.id} is yours now.", "success")
    return redirect(url_for("leads.detail", lead_id=lead.id))


# --- the lead workspace ----------------------------------------------------------------


def _load(lead_id: int) -> Lead:
    lead = db.session.scalar(
        sa.select(Lead)
        .where(Lead.id == lead_id)
        .options(
            joinedload(Lead.patient),
            joinedload(Lead.condition),
            joinedload(Lead.assignee),
            selectinload(Lead.follow_ups).joinedload(FollowUp.owner),
            selectinload(Lead.appointments).joinedload(Appointment.physician),
        )
    )
    if lead is None:
        abort(404)
    return lead


def _workspace(lead: Lead, status: int = 200, **forms):
    """Render the workspace and audit the view (SPEC 12: who saw which patient), also when it is
    re-shown after a refused or conflicting form: ``forms`` replaces the blank form of that name
    (values kept)."""
    page = _render_workspace(lead, status, **forms)
    # Audited after rendering: committing first would expire what the page reads.
    detail = {"patient_id": lead.patient_id}
    if status != 200:
        detail["page"] = f"re-shown after a form ({status})"
    audit.record("view_lead", "lead", lead.id, detail=detail)
    db.session.commit()
    return page


def _render_workspace(lead: Lead, status: int = 200, **forms):
    me = current_user._get_current_object()
    now = datetime.now(UTC)
    window = window_from_config(current_app.config)
    patient_tz, tz_known = followups.patient_timezone(lead.patient)
    patient_local = local_now(now, patient_tz)
    can_call = is_allowed(now, patient_tz, window)
    events = db.session.scalars(
        sa.select(LeadEvent)
        .where(LeadEvent.lead_id == lead.id)
        .options(joinedload(LeadEvent.actor))
        .order_by(LeadEvent.id.desc())
    ).all()
    user_ids = {e.data.get(k) for e in events for k in ("to", "from", "owner") if isinstance(e.data.get(k), int)}
    names = (
        dict(db.session.execute(sa.select(User.id, User.name).where(User.id.in_(user_ids))).all()) if user_ids else {}
    )
    version = lead.version

    def blank(cls, **kw):
        form = cls(formdata=None, **kw)
        form.version.data = version
        return form

    status_form = forms.get("status_form") or blank(lead_forms.StatusForm)
    targets = workflow.allowed_targets(lead, me)
    # No status preselected: pressing "Change status" without choosing must not complete a lead.
    status_form.to.choices = [("", "Choose…")] + [
        (t.value, rule.label, _confirm_status(lead, t)) for t, rule in targets
    ]
    booking_form = forms.get("booking_form") or blank(lead_forms.BookingForm)
    candidates = booking.match_candidates(lead)
    physicians = booking.listed_physicians(candidates)
    bookable = booking.bookable(candidates, physicians)
    booking_form.physician_id.choices = _physician_choices(bookable)
    if "booking_form" not in forms and bookable:
        booking_form.mode.data = bookable[0].get("mode") or VisitMode.IN_PERSON.value  # the preselected one's
    assign_form = forms.get("assign_form") or blank(lead_forms.AssignForm)
    adult_form = forms.get("adult_form") or blank(lead_forms.ConfirmAdultForm)
    if me.is_admin:
        people = db.session.execute(
            sa.select(User.id, User.name).where(User.active.is_(True)).order_by(User.name)
        ).all()
        assign_form.user_id.choices = [(i, n) for i, n in people]
    follow_form = forms.get("follow_form") or blank(lead_forms.FollowUpForm)
    retried = ("note_form", "call_form", "follow_form", "status_form", "booking_form", "assign_form", "reschedule_form")
    for name in retried:
        form = forms.get(name)
        if form is not None:
            form.version.data = version  # the retry is against what is on screen now
    ids = [int(c["physician_id"]) for c in candidates]
    booked_now = matching.recent_bookings(ids, now)
    unavailable = {pid: why for pid in ids if (why := booking.unavailable_reason(physicians.get(pid)))}
    sla = sla_state(lead, now, SlaConfig.from_config(current_app.config))
    return (
        render_template(
            "leads/detail.html",
            lead=lead,
            p=lead.patient,
            # On the patient's own date, as eligibility counts it (an 18th birthday is 18 all day there).
            patient_age=age_on(lead.patient.date_of_birth, matching.patient_today(lead.patient, now)),
            me=me,
            now=now,
            events=events,
            names=names,
            window=window,
            patient_tz=patient_tz,
            tz_known=tz_known,
            patient_local=patient_local,
            can_call=can_call,
            next_call=None if can_call else next_allowed(now, patient_tz, window),
            sla=sla,
            candidates=candidates,
            physicians=physicians,
            booked_now=booked_now,
            unavailable=unavailable,
            open_follow_ups=[fu for fu in lead.follow_ups if fu.done_at is None],
            done_follow_ups=[fu for fu in lead.follow_ups if fu.done_at is not None],
            note_form=forms.get("note_form") or blank(lead_forms.NoteForm),
            call_form=forms.get("call_form") or blank(lead_forms.CallForm),
            follow_form=follow_form,
            done_form=blank(lead_forms.FollowUpDoneForm),
            done_outcomes=followups.DONE_OUTCOMES,
            done_outcome_labels=followups.DONE_OUTCOME_LABELS,
            status_form=status_form,
            booking_form=booking_form,
            eligibility_doubt=booking.eligibility_doubt(lead),
            outcome_form=blank(lead_forms.OutcomeForm),
            reschedule_form=forms.get("reschedule_form") or blank(lead_forms.RescheduleForm),
            appt_outcomes={a.id: booking.possible_outcomes(a, now) for a in lead.appointments},
            appt_problems={
                a.id: problem
                for a in lead.live_appointments
                if a.starts_at > now and (problem := booking.registration_problem(a, now))
            },
            cancellations_emailed={
                e.data.get("appointment_id"): e.created_at
                for e in events
                if e.kind == EventKind.EMAIL_SENT and e.data.get("kind") == "appointment_cancellation"
            },
            outcome_labels=booking.OUTCOME_LABELS,
            assign_form=assign_form,
            adult_form=adult_form,
            reopen=[t for t, _rule in targets] if lead.status == LeadStatus.LOST else [],
            iso=_iso,
            call_labels=workflow.CALL_OUTCOME_LABELS,
            partials={
                "eligibility": _exists("leads/_eligibility_panel.html"),
                "match": _exists("leads/_match_panel.html"),
            },
        ),
        status,
    )


def _iso(value):
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:
        return None


def _exists(template: str) -> bool:
    """``{% include ... ignore missing %}``, known in advance so a fallback can be shown."""
    try:
        current_app.jinja_env.get_template(template)
    except TemplateNotFound:
        return False
    return True


def _confirm_status(lead: Lead, to: LeadStatus) -> dict:
    """The question asked before a change only an admin can undo (static/app.js: an option's data-confirm)."""
    if to != LeadStatus.LOST:
        return {}
    question = f"Close {lead.patient.full_name}'s lead as lost? Only an admin can reopen it."
    if lead.live_appointments:
        question += " Its booked appointment is cancelled too" + (
            ", and the patient is emailed that it is." if lead.patient.email else "."
        )
    return {"data-confirm": question}


def _physician_choices(candidates: list[dict]) -> list[tuple]:
    """Each option carries its visit mode, which the Visit field follows (static/leads.js)."""
    return [(int(c["physician_id"]), _candidate_label(c), {"data-mode": c.get("mode") or ""}) for c in candidates]


def _candidate_label(c: dict) -> str:
    parts = [str(c.get("name") or f"Physician #{c['physician_id']}")]
    if c.get("mode") == "telehealth":
        parts.append("telehealth")
    elif c.get("distance_miles") is not None:
        parts.append(f"{float(c['distance_miles']):.1f} mi")
    return " — ".join(parts)


@bp.get("/leads/<int:lead_id>")
@login_required
def detail(lead_id: int):
    return _workspace(_load(lead_id))


# A change of one's own this recent is most likely the same form sent twice (a double click).
SENT_TWICE_SECONDS = 60
SENT_TWICE = (
    "You changed this lead a moment ago — was the form sent twice? This second send was not applied; "
    "the lead below shows what was saved."
)


def _conflict_message(lead_id: int) -> str:
    event = db.session.scalar(
        sa.select(LeadEvent).where(LeadEvent.lead_id == lead_id).order_by(LeadEvent.id.desc()).limit(1)
    )
    if event is None:
        who = "someone else"
    elif event.actor_id is None:
        who = "the system"
    elif event.actor_id == current_user.id:
        if datetime.now(UTC) - event.created_at < timedelta(seconds=SENT_TWICE_SECONDS):
            return SENT_TWICE
        who = "you (in another tab)"
    else:
        who = event.actor.name
    return CONFLICT.format(who=who)


def _conflict(lead_id: int, form_name: str | None = None, form=None):
    db.session.rollback()
    message = _conflict_message(lead_id)
    if wants_json():
        return jsonify({"error": message}), 409
    flash(message, "warning")
    lead = _load(lead_id)
    return _workspace(lead, 409, **({form_name: form} if form_name else {}))


def _invalid(lead: Lead, form_name: str, form, message: str | None = None):
    """Validation or refused action: keep what was typed, say what is wrong (422)."""
    db.session.rollback()
    errors = {k: v for k, v in form.errors.items()} if form is not None else {}
    text = message or _describe_errors(form)
    if wants_json():
        return jsonify({"error": text, "fields": errors}), 422
    flash(text, "danger")
    lead = _load(lead.id)
    return _workspace(lead, 422, **{form_name: form})


def _describe_errors(form) -> str:
    """Every field error in one sentence, so a field without its own slot on the page is still named."""
    parts = []
    for name, errs in (form.errors if form is not None else {}).items():
        field = getattr(form, name, None)
        label = field.label.text if field is not None and field.label is not None and field.label.text else name
        parts += [f"{label}: {e}" for e in errs if isinstance(e, str)]
    return "Please correct — " + "; ".join(parts) if parts else "Please correct the highlighted field(s)."


def _done(lead: Lead, message: str, anchor: str = ""):
    if wants_json():
        return jsonify({"ok": True, "lead_id": lead.id, "status": lead.status.value, "version": lead.version})
    flash(message, "success")
    return redirect(url_for("leads.detail", lead_id=lead.id) + (f"#{anchor}" if anchor else ""))


def _action(
    lead_id: int,
    form_cls,
    form_name: str,
    apply,
    success,
    anchor="",
    *,
    check_version=True,
    tell_owner=False,
    plan_next_step=lambda: True,
    sent_twice=None,
):
    """The shape of every workspace POST: validate, check version, apply, commit.

    ``check_version=False`` for what only adds to the timeline (a note): whatever changed since the
    page was loaded cannot make it wrong, so refusing it would only make the specialist send it again.
    ``tell_owner``: a colleague covering the lead (changing its status, booking, moving or ending a
    visit) is allowed, and the specialist who holds it gets an alert saying what was done.
    ``sent_twice(lead, form)``: a message when the change this form asks for is the one this user
    just made (a double click): it was saved, and the conflict message would say it was not."""
    lead = _load(lead_id)
    form = form_cls()
    if form_name == "status_form":
        form.to.choices = [(t.value, r.label) for t, r in workflow.allowed_targets(lead, current_user)]
        form.to.validate_choice = False
    if not form.validate_on_submit():
        if "version" in form.errors:
            return _invalid(lead, form_name, form, form.errors["version"][0])
        return _invalid(lead, form_name, form)
    if check_version and form.version_int() != lead.version:
        repeated = sent_twice(lead, form) if sent_twice is not None else None
        if repeated:
            return _done(lead, repeated, anchor)
        return _conflict(lead.id, form_name, form)
    owner = lead.assignee
    try:
        apply(lead, form)
        db.session.flush()
        # Whatever the action, a worked lead is not left without a next step (SPEC 2.7). Not on a
        # note: it keeps the lead's version (a form open elsewhere stays valid), and planning would not.
        planned = None
        if check_version and plan_next_step():
            planned = followups.ensure_next_step(lead, actor=current_user._get_current_object())
        next_step = followups.describe_next_step(planned, lead, current_user.timezone) if planned else None
        if tell_owner and owner is not None and owner.id != current_user.id and owner.active:
            what = success(lead) if callable(success) else success
            notify(owner, "lead_changed", f"{current_user.name} on your lead #{lead.id}: {what}", lead=lead)
        db.session.commit()
    except StaleDataError:
        return _conflict(lead_id, form_name, form)
    except (
        workflow.TransitionError,
        followups.FollowUpError,
        booking.BookingError,
        routing.AssignmentError,
        ValueError,
    ) as exc:
        if isinstance(exc, followups.CallingWindowError) and form_name == "follow_form":
            suggestion = exc.suggestion.astimezone(
                zone(
                    followups.patient_timezone(lead.patient)[0]
                    if form.tz_basis.data == "patient"
                    else current_user.timezone
                )
            )
            form.due.data = suggestion.replace(tzinfo=None)
            form.due.raw_data = [form.due.data.strftime(lead_forms.DT_FORMAT)]  # rendered from raw_data
            form.due.errors = [str(exc) + " The suggested time is filled in: press Schedule to use it."]
            form.due.suggested = True  # the field holds a good time now: not marked red
            # The reason and the suggestion are under the form; the message at the top only points there.
            return _invalid(
                lead, form_name, form, "Not scheduled: that time is outside the patient's calling window (see below)."
            )
        return _invalid(lead, form_name, form, str(exc))
    message = success(lead) if callable(success) else success
    if next_step:
        return _done(lead, f"{message} {next_step}", "follow-ups")
    return _done(lead, message, anchor(lead) if callable(anchor) else anchor)


def _typed_time(lead: Lead, value: datetime, basis: str) -> datetime:
    tz = followups.patient_timezone(lead.patient)[0] if basis == "patient" else current_user.timezone
    return parse_local(value, tz)


@bp.post("/leads/<int:lead_id>/age-confirmed")
@login_required
def confirm_adult(lead_id: int):
    me = current_user._get_current_object()

    def success(lead):
        return "Noted: the patient confirmed they are 18 or older. Eligibility was checked again."

    return _action(
        lead_id,
        lead_forms.ConfirmAdultForm,
        "adult_form",
        lambda lead, form: patient_details.confirm_adult(lead, actor=me, now=datetime.now(UTC)),
        success,
        "eligibility",
    )


@bp.post("/leads/<int:lead_id>/notes")
@login_required
def add_note(lead_id: int):
    me = current_user._get_current_object()
    return _action(
        lead_id,
        lead_forms.NoteForm,
        "note_form",
        lambda lead, form: workflow.add_note(lead, form.text.data, actor=me),
        "Note added.",
        "timeline",
        check_version=False,
    )


@bp.post("/leads/<int:lead_id>/calls")
@login_required
def log_call(lead_id: int):
    me = current_user._get_current_object()

    def apply(lead, form):
        routing.take_if_unassigned(lead, me)
        return workflow.log_call(lead, form.outcome.data, actor=me, note=form.note.data or "")

    return _action(
        lead_id,
        lead_forms.CallForm,
        "call_form",
        apply,
        _call_logged,
        "timeline",
    )


def _call_logged(lead: Lead) -> str:
    outcome = workflow.CALL_OUTCOME_LABELS[request.form["outcome"]].lower()
    return f"Call logged ({outcome}); the lead is {lead.status.value}."


@bp.post("/leads/<int:lead_id>/follow-ups")
@login_required
def schedule_follow_up(lead_id: int):
    me = current_user._get_current_object()

    def apply(lead, form):
        due = _typed_time(lead, form.due.data, form.tz_basis.data)
        return followups.schedule(lead, due_at=due, kind=form.kind.data, note=form.note.data or "", actor=me)

    def success(lead):
        fu = max((f for f in lead.follow_ups if f.done_at is None), key=lambda f: f.id)
        mine = fu.due_at.astimezone(zone(me.timezone))
        theirs = fu.due_at.astimezone(zone(followups.patient_timezone(lead.patient)[0]))
        # The patient's day is named when it is not the specialist's (Guam is already tomorrow).
        their_time = f"{theirs:%I:%M %p %Z}" if theirs.date() == mine.date() else f"{theirs:%a %b %d, %I:%M %p %Z}"
        return f"Follow-up scheduled: {mine:%a %b %d, %I:%M %p %Z} your time, {their_time} patient time."

    return _action(lead_id, lead_forms.FollowUpForm, "follow_form", apply, success, "follow-ups")


@bp.post("/leads/<int:lead_id>/follow-ups/<int:fu_id>/done")
@login_required
def follow_up_done(lead_id: int, fu_id: int):
    me = current_user._get_current_object()

    declined = []

    def apply(lead, form):
        fu = next((f for f in lead.follow_ups if f.id == fu_id), None)
        if fu is None:
            raise followups.FollowUpError("That follow-up does not belong to this lead.")
        if form.outcome.data != "not_needed":
            routing.take_if_unassigned(lead, me)
        elif fu.automatic:
            declined.append(fu)  # the default next step itself, refused: not planned again at once
        return followups.close(fu, actor=me, outcome=form.outcome.data)

    def success(lead):
        if declined and followups.needs_next_step(lead):
            return (
                "Follow-up closed. No next step is planned: the lead waits in Mine among those without one "
                "until you plan one or close it."
            )
        return "Follow-up closed."

    return _action(
        lead_id,
        lead_forms.FollowUpDoneForm,
        "done_form",
        apply,
        success,
        "follow-ups",
        plan_next_step=lambda: not declined,
    )


@bp.post("/leads/<int:lead_id>/status")
@login_required
def change_status(lead_id: int):
    me = current_user._get_current_object()

    def apply(lead, form):
        reason = form.lost_reason.data if form.to.data == LeadStatus.LOST.value else None
        return workflow.change_status(lead, form.to.data, actor=me, reason=reason, note=form.note.data or None)

    return _action(
        lead_id,
        lead_forms.StatusForm,
        "status_form",
        apply,
        lambda lead: f"Status changed to {lead.status.value}.",
        tell_owner=True,
    )


@bp.post("/leads/<int:lead_id>/appointments")
@login_required
def book(lead_id: int):
    me = current_user._get_current_object()

    def apply(lead, form):
        starts = _typed_time(lead, form.starts.data, form.tz_basis.data)
        routing.take_if_unassigned(lead, me)
        try:
            return booking.book(
                lead,
                physician_id=form.physician_id.data,
                starts_at=starts,
                mode=form.mode.data,
                actor=me,
                duration_minutes=form.duration.data,
                notes=form.notes.data or "",
                override=form.override.data,
            )
        except booking.EligibilityOverrideNeeded:
            form.override.errors = ["Tick this to book a lead that is not (or not yet) eligible."]
            raise

    def make():
        form = lead_forms.BookingForm()
        lead = db.session.get(Lead, lead_id)
        candidates = booking.match_candidates(lead) if lead is not None else []
        listed = booking.listed_physicians(candidates)
        form.physician_id.choices = _physician_choices(booking.bookable(candidates, listed))
        return form

    def sent_twice(lead, form):
        try:
            starts = _typed_time(lead, form.starts.data, form.tz_basis.data)
        except ValueError:
            return None
        recent = datetime.now(UTC) - timedelta(minutes=2)
        for appt in lead.appointments:
            if (
                appt.status in LIVE_APPOINTMENT
                and appt.created_by_id == me.id
                and appt.physician_id == form.physician_id.data
                and appt.starts_at == starts
                and appt.created_at >= recent
            ):
                return "Appointment booked (the form was sent twice: it is booked once); the invite is in the outbox."
        return None

    return _action(
        lead_id,
        make,
        "booking_form",
        apply,
        "Appointment booked; the confirmation email with the calendar invite is in the outbox.",
        "appointments",
        tell_owner=True,
        sent_twice=sent_twice,
    )


def _lead_appointment(lead: Lead, appt_id: int):
    appt = next((a for a in lead.appointments if a.id == appt_id), None)
    if appt is None:
        raise booking.BookingError("That appointment does not belong to this lead.")
    return appt


@bp.post("/leads/<int:lead_id>/appointments/<int:appt_id>/reschedule")
@login_required
def reschedule(lead_id: int, appt_id: int):
    me = current_user._get_current_object()

    def apply(lead, form):
        appt = _lead_appointment(lead, appt_id)
        try:
            return booking.reschedule(appt, starts_at=_typed_time(lead, form.starts.data, form.tz_basis.data), actor=me)
        except booking.BookingError as exc:
            form.starts.errors = [str(exc)]  # next to the field, in the form opened again
            raise

    def success(lead):
        emailed = "; the patient is emailed the new time with a calendar update" if lead.patient.email else ""
        return f"Appointment moved{emailed}."

    return _action(
        lead_id, lead_forms.RescheduleForm, "reschedule_form", apply, success, "appointments", tell_owner=True
    )


@bp.post("/leads/<int:lead_id>/appointments/<int:appt_id>/outcome")
@login_required
def appointment_outcome(lead_id: int, appt_id: int):
    me = current_user._get_current_object()

    emailed = []

    def apply(lead, form):
        appt = _lead_appointment(lead, appt_id)
        sequence = appt.ics_sequence
        booking.set_outcome(appt, form.outcome.data, actor=me, note=form.note.data or "")
        emailed.append(appt.ics_sequence > sequence)  # only a cancellation email raises it

    def success(lead):
        if emailed and emailed[0]:
            message = (
                "Appointment cancelled; the patient is emailed a cancellation that takes it off their calendar. "
                f"The lead is {lead.status.value}."
            )
        else:
            message = f"Appointment outcome recorded; the lead is {lead.status.value}."
        return message  # a no-show or a cancellation gets its next step planned by _action

    return _action(
        lead_id,
        lead_forms.OutcomeForm,
        "outcome_form",
        apply,
        success,
        "appointments",
        tell_owner=True,
    )


@bp.post("/leads/<int:lead_id>/assign")
@login_required
def assign(lead_id: int):
    me = current_user._get_current_object()

    def apply(lead, form):
        target = me
        if form.user_id.data and form.user_id.data != me.id:
            target = db.session.get(User, form.user_id.data)
            if target is None:
                raise routing.AssignmentError("That user does not exist.")
        return routing.assign(lead, target, actor=me)

    def message(lead):
        return "The lead is yours." if lead.assignee_id == me.id else f"Assigned to {lead.assignee.name}."

    return _action(lead_id, lead_forms.AssignForm, "assign_form", apply, message)


@bp.post("/leads/<int:lead_id>/unassign")
@login_required
def unassign(lead_id: int):
    me = current_user._get_current_object()
    return _action(
        lead_id,
        lead_forms.AssignForm,
        "assign_form",
        lambda lead, form: routing.unassign(lead, actor=me),
        "The lead is back in the unassigned pool.",
    )


# --- notifications -----------------------------------------------------------------------


@bp.get("/notifications")
@login_required
def notifications():
    show = request.args.get("show", "unread")
    stmt = sa.select(Notification).where(Notification.user_id == current_user.id)
    if show != "all":
        stmt = stmt.where(Notification.read_at.is_(None))
    page = db.paginate(stmt.order_by(Notification.id.desc()), per_page=50, error_out=False)
    if page.page > max(page.pages, 1):  # past the end (alerts were read meanwhile): the last page
        page = db.paginate(stmt.order_by(Notification.id.desc()), page=max(page.pages, 1), per_page=50, error_out=False)
    # Who each alert is about, read now (the stored message names no patient: reminders are emailed).
    lead_ids = sorted({n.lead_id for n in page.items if n.lead_id})
    patients = dict(
        db.session.execute(
            sa.select(Lead.id, Patient.first_name + " " + Patient.last_name)
            .join(Patient, Patient.id == Lead.patient_id)
            .where(Lead.id.in_(lead_ids))
        ).all()
    )
    physicians = directory.physicians_of_alerts(page.items) if current_user.is_admin else {}
    html = render_template("leads/notifications.html", page=page, show=show, patients=patients, physicians=physicians)
    if patients:  # a list of patients' names is a view of patient data (SPEC 12)
        audit.record("view_notifications", "lead", None, detail={"leads": audit.lead_list(sorted(patients))})
        db.session.commit()
    return html


@bp.post("/notifications/<int:note_id>/read")
@login_required
def notification_read(note_id: int):
    note = db.session.get(Notification, note_id)
    if note is None or note.user_id != current_user.id:
        abort(404)
    if note.read_at is None:
        note.read_at = datetime.now(UTC)
        db.session.commit()
    if request.form.get("open") == "physician" and current_user.is_admin:
        physician_id = directory.physicians_of_alerts([note]).get(note.id)
        if physician_id is not None:
            return redirect(url_for("admin.physician_edit", physician_id=physician_id))
    if request.form.get("open") and note.lead_id:
        return redirect(url_for("leads.detail", lead_id=note.lead_id))
    return redirect(url_for("leads.notifications"))


@bp.post("/notifications/read-all")
@login_required
def notifications_read_all():
    n = db.session.execute(
        sa.update(Notification)
        .where(Notification.user_id == current_user.id, Notification.read_at.is_(None))
        .values(read_at=datetime.now(UTC))
    ).rowcount
    db.session.commit()
    flash(f"{n} notification(s) marked read.", "info")
    return redirect(url_for("leads.notifications"))


from crm.leads import details_routes, match_routes  # noqa: E402,F401  (add /leads/<id>/rematch and /details to bp)
