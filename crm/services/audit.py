"""The audit trail: who saw or changed which record, from where (SPEC 12)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import has_request_context, request
from flask_login import current_user

from crm.extensions import db
from crm.models import AuditLog, User


def client_ip() -> str | None:
    return request.remote_addr if has_request_context() else None


def record(
    action: str,
    object_type: str | None = None,
    object_id: object | None = None,
    *,
    user: User | None = None,
    detail: dict | None = None,
) -> AuditLog:
    """Append one audit row. ``user`` defaults to the signed-in user, if any."""
    if user is None and has_request_context() and current_user and current_user.is_authenticated:
        user = current_user._get_current_object()
    entry = AuditLog(
        user_id=user.id if user is not None else None,
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id is not None else None,
        ip=client_ip(),
        detail=detail,
    )
    db.session.add(entry)
    db.session.flush()
    return entry


def lead_list(lead_ids) -> str:
    """The leads a list page showed, as ",12,15,19," in an audit row's detail, so that the audit
    trail's filter by lead finds the page with ``mentions_lead`` (SPEC 12: who saw which patient)."""
    return "," + ",".join(str(i) for i in lead_ids) + ","


def mentions_lead(lead_id: int):
    """SQL condition: an audit row of a list page that showed ``lead_id`` (see ``lead_list``)."""
    return sa.and_(AuditLog.object_type == "lead", sa.cast(AuditLog.detail, sa.Text).like(f"%,{int(lead_id)},%"))
