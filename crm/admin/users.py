"""/admin/users: staff accounts: create, role, deactivate/reactivate, password reset, shift, capacity."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from crm.admin.forms import COMMON_TIMEZONES, ResetPasswordForm, UserCreateForm, UserEditForm, UserRoleForm
from crm.admin.routes import bp, saved_meanwhile
from crm.extensions import db
from crm.models import Lead, User
from crm.models.enums import OPEN_STATUSES
from crm.services import edit_guard, users_admin
from crm.services.routing import open_counts
from crm.services.users_admin import UserAdminError


def _me() -> User:
    return current_user._get_current_object()


@bp.get("/users")
def users():
    rows = db.session.scalars(sa.select(User).order_by(User.active.desc(), User.name)).all()
    open_leads = dict(
        db.session.execute(
            sa.select(Lead.assignee_id, sa.func.count())
            .where(Lead.status.in_([s.value for s in OPEN_STATUSES]), Lead.assignee_id.is_not(None))
            .group_by(Lead.assignee_id)
        ).all()
    )
    return render_template("admin/users/list.html", users=rows, open_leads=open_leads)


@bp.route("/users/new", methods=["GET", "POST"])
def user_new():
    form = UserCreateForm()
    valid = form.validate_on_submit()
    if form.is_submitted():
        # Checked alongside the form's own validators: every field's error in one round.
        for name, message in users_admin.new_user_problems(form.email.data, form.timezone.data).items():
            if not form[name].errors:  # an empty field's own "required" says enough
                form[name].errors = [message]
                valid = False
    if valid:
        try:
            user = users_admin.create_user(
                form.email.data,
                form.name.data,
                form.password.data,
                form.role.data,
                capacity=form.capacity.data,
                languages=form.languages.data or "en",
                timezone=form.timezone.data,
                by=_me(),
            )
        except UserAdminError as exc:
            db.session.rollback()
            target = form.email if "email" in str(exc).lower() else form.password
            if target is form.password and ("name" in str(exc).lower()):
                target = form.name
            if "time zone" in str(exc):
                target = form.timezone
            target.errors = [str(exc)]
        else:
            db.session.commit()
            flash(
                f"Created {user.name} ({user.role}). Tell them their temporary password in person or by phone; "
                "they choose their own when they first sign in.",
                "success",
            )
            return redirect(url_for("admin.user_edit", user_id=user.id))
    return render_template("admin/users/new.html", form=form, timezones=COMMON_TIMEZONES)


def _user(user_id: int) -> User:
    return db.session.get(User, user_id) or abort(404)


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
def user_edit(user_id: int):
    user = _user(user_id)
    form = UserEditForm(obj=user)
    if not form.is_submitted():
        form.languages.data = "; ".join(user.languages or [])
        form.loaded.data = edit_guard.token(users_admin.profile_snapshot(user))
    if form.validate_on_submit() and not saved_meanwhile(form, user, users_admin.profile_snapshot, "profile"):
        try:
            changes = users_admin.update_profile(
                user,
                name=form.name.data,
                capacity=form.capacity.data,
                languages=form.languages.data or "en",
                timezone=form.timezone.data,
                email=form.email.data,
                by=_me(),
            )
        except UserAdminError as exc:
            db.session.rollback()
            message = str(exc)
            target = form.name
            if "time zone" in message:
                target = form.timezone
            elif "email" in message.lower():
                target = form.email
            target.errors = [message]
        else:
            db.session.commit()
            flash(f"Saved {user.name}." if changes else "Nothing changed.", "success" if changes else "info")
            return redirect(url_for("admin.user_edit", user_id=user.id))
    role_form = UserRoleForm(role=str(user.role))
    return render_template(
        "admin/users/edit.html",
        user=user,
        form=form,
        role_form=role_form,
        password_form=ResetPasswordForm(),
        timezones=COMMON_TIMEZONES,
        is_last_admin=user.is_admin and user.active and users_admin.active_admin_count(exclude=user) == 0,
        own_account=user.id == current_user.id,
        open_leads=users_admin.open_lead_count(user),
        colleagues=_colleagues_to_hand_to(user),
    )


def _colleagues_to_hand_to(user: User) -> list[tuple[int, str]]:
    """Who a deactivated user's open leads can go to: every active colleague, each with their load and
    whether they can work now (one with a temporary password, new or just reset, cannot until they
    choose their own)."""
    people = db.session.scalars(
        sa.select(User).where(User.active.is_(True), User.id != user.id).order_by(User.name)
    ).all()
    loads = open_counts([p.id for p in people])

    def state(p: User) -> str:
        if p.must_change_password:
            return ", temporary password not replaced yet"
        return ", on shift" if p.on_shift else ""

    return [(p.id, f"{p.name} ({loads.get(p.id, 0)} open of {p.capacity}{state(p)})") for p in people]


def _act(user_id: int, fn, done):
    """Run ``fn(user)`` and commit; flash ``done`` (a format string, or a function of the user and
    what ``fn`` returned) unless ``fn`` returned False (nothing to do)."""
    user = _user(user_id)
    try:
        changed = fn(user)
    except UserAdminError as exc:
        db.session.rollback()
        flash(str(exc), "danger")
    else:
        db.session.commit()
        if changed is not False:
            flash(done(user, changed) if callable(done) else done.format(name=user.name), "success")
    if user.id == current_user.id and not (user.active and user.is_admin):
        return redirect(url_for("leads.queue"))  # you changed your own access
    return redirect(url_for("admin.user_edit", user_id=user.id))


@bp.post("/users/<int:user_id>/role")
def user_role(user_id: int):
    form = UserRoleForm()
    if not form.validate_on_submit():
        flash("Pick a role.", "danger")
        return redirect(url_for("admin.user_edit", user_id=user_id))
    return _act(
        user_id, lambda u: users_admin.change_role(u, form.role.data, by=_me()), "{name} is now " + form.role.data + "."
    )


def _deactivated(hand_to: User | None):
    def message(user: User, moved: int) -> str:
        if not moved:
            return f"{user.name} is deactivated and signed out everywhere. They had no open leads."
        leads = "open lead" if moved == 1 else "open leads"
        where = f"went to {hand_to.name}" if hand_to is not None else "went back to the unassigned pool"
        return (
            f"{user.name} is deactivated and signed out everywhere. Their {moved} {leads} {where}, "
            "with their follow-ups."
        )

    return message


@bp.post("/users/<int:user_id>/deactivate")
def user_deactivate(user_id: int):
    chosen = (request.form.get("hand_to") or "").strip()
    hand_to = None
    if chosen:
        hand_to = db.session.get(User, int(chosen)) if chosen.isascii() and chosen.isdigit() else None
        if hand_to is None:
            flash("Choose who takes over their leads from the list, or the unassigned pool.", "danger")
            return redirect(url_for("admin.user_edit", user_id=user_id))

    def deactivate(user: User):
        moved = users_admin.deactivate(user, by=_me(), hand_to=hand_to)
        return False if moved is None else moved  # None: inactive already, nothing to say

    return _act(user_id, deactivate, _deactivated(hand_to))


@bp.post("/users/<int:user_id>/unlock")
def user_unlock(user_id: int):
    return _act(user_id, lambda u: users_admin.unlock(u, by=_me()), "{name} is unlocked and can sign in again.")


@bp.post("/users/<int:user_id>/reactivate")
def user_reactivate(user_id: int):
    return _act(user_id, lambda u: users_admin.reactivate(u, by=_me()), "{name} can sign in again.")


@bp.post("/users/<int:user_id>/password")
def user_password(user_id: int):
    user = _user(user_id)
    form = ResetPasswordForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for e in errors:
                flash(f"Password not changed: {e}", "danger")
        return redirect(url_for("admin.user_edit", user_id=user.id))
    return _act(
        user_id,
        lambda u: users_admin.reset_password(u, form.password.data, by=_me()),
        "New password set for {name}; their open sessions have ended and they are off shift until they sign in.",
    )


@bp.post("/users/<int:user_id>/shift")
def user_shift(user_id: int):
    on = request.form.get("on_shift") == "1"
    return _act(
        user_id,
        lambda u: users_admin.set_shift(u, on, by=_me()),
        "{name} is " + ("on shift: they receive new leads." if on else "off shift."),
    )
