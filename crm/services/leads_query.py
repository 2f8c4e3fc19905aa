"""Queue queries: which leads a view shows, in which order, fast at a million leads.

Views (SPEC 7): ``unassigned`` (most urgent, then oldest first), ``mine`` (my open
leads, next follow-up first), ``due`` (open leads whose next follow-up is due or
overdue, mine first) and ``all`` (newest first). Every view takes the filters
(status, state, condition, source, assignee, created range) and the search.

Performance notes (see docs/queue.md and migration 0002):
- the status lists are rendered as SQL literals identical to the predicates of the
  partial indexes, so both PostgreSQL (even with generic prepared plans) and
  SQLite can prove the index applies;
- pages are fetched with LIMIT per_page + 1 (no COUNT over the whole view), and
  totals are counted over at most ``COUNT_CAP`` rows ("500+");
- name search uses ranges on ``lower(last_name)`` / ``lower(first_name)``
  (expression indexes); email and phone searches are equality on indexed columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from crm.models import Lead, Patient, User
from crm.models.enums import LeadSourceKind, LeadStatus
from crm.services.calling_window import zone
from crm.services.contact import normalise_email, normalise_phone

VIEWS = ("unassigned", "mine", "due", "all")
COUNT_CAP = 500
OPEN_SQL = "leads.status IN ('new', 'attempting', 'contacted', 'booked')"
OPEN = sa.text(OPEN_SQL)
PER_PAGE = 25
MAX_PAGE = 2_000
MAX_NAME_WORDS = 6  # words of a name search used (a name longer than that is still found by its start)
SEARCH_CAP = 1_000  # patients a name search may match before we ask for more of the name


class SearchError(ValueError):
    """A search the queue cannot run as typed; ``str(err)`` says what to type instead."""


@dataclass
class Filters:
    status: str | None = None
    state: str | None = None
    condition_id: int | None = None
    source: str | None = None  # "form" | "manual" | "webhook" | "webhook:<id>"
    assignee: str | None = None  # "me" | "none" | "<user id>"
    created_from: date | None = None
    created_to: date | None = None
    q: str | None = None

    def active(self) -> bool:
        return any(v not in (None, "") for v in self.__dict__.values())


@dataclass
class QueuePage:
    items: list[Lead]
    page: int
    per_page: int
    has_next: bool
    total: int | None = None  # None: not counted (the "all" view without a search)
    capped: bool = False
    mine_count: int | None = None  # due view: how many of the due leads are mine
    notes: list[str] = field(default_factory=list)

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def first(self) -> int:
        return (self.page - 1) * self.per_page + 1 if self.items else 0

    @property
    def last(self) -> int:
        return (self.page - 1) * self.per_page + len(self.items)

    @property
    def pages(self) -> int | None:
        if self.total is None or self.capped:
            return None
        return max(1, -(-self.total // self.per_page))


def _base() -> sa.Select:
    return sa.select(Lead)


# The last four characters of the stored E.164 number, as migration 0019 indexes them (the literal 3
# keeps it the index's expression: a bound parameter would not match it on SQLite).
PHONE_LAST4 = sa.func.substr(Patient.phone, sa.func.length(Patient.phone) - sa.literal_column("3"))
MIN_PHONE_SUFFIX = 4


def _phone_digits(q: str) -> str | None:
    """The digits of a search typed as a phone number (digits and separators only), else None."""
    digits = re.sub(r"\D", "", q)
    if digits and len(digits) >= len(re.sub(r"[\s().+-]", "", q)) - 1 and len(digits) >= MIN_PHONE_SUFFIX:
        return digits
    return None


def phone_suffix(q: str | None) -> str | None:
    """The digits a search looks for at the end of phone numbers ("0142", "555-0142"): fewer than ten
    digits that are not a whole number; None for a full number, a name or an email."""
    q = (q or "").strip()
    digits = _phone_digits(q) if "@" not in q else None
    if digits is None or len(digits) >= 10:
        return None
    try:
        normalise_phone(q)  # a short international number written in full ("+682 12345")
    except ValueError:
        return digits
    return None


def patient_search_clause(q: str):
    """Name prefix(es), email (whole or its beginning), a full phone number, or the last 4 to 9 digits
    of one; raises SearchError for a number that is neither."""
    q = q.strip()
    if "@" in q:
        try:
            return Patient.email == normalise_email(q)
        except ValueError:
            return _prefix(Patient.email, q.lower())  # "noah.ramirez@exa": still being typed
    digits = _phone_digits(q)
    if digits is None and re.fullmatch(r"[\d\s().+-]*\d[\d\s().+-]*", q):
        raise SearchError("Type at least the last 4 digits of the phone number, or all of it.")
    if digits:
        suffix = phone_suffix(q)
        if suffix:
            # "0142" or "555-0142": the last four through their index, the rest checked on those few rows.
            return sa.and_(PHONE_LAST4 == suffix[-4:], Patient.phone.like("%" + suffix))  # noqa: SIM300 - an expression, not a constant
        try:
            phone = normalise_phone(q)
        except ValueError:
            if len(digits) == 10:
                phone = "+1" + digits
            elif len(digits) == 11 and digits.startswith("1"):
                phone = "+" + digits
            else:
                raise SearchError(
                    "Type the full phone number, or its last 4 digits or more, to search by phone."
                ) from None
        return Patient.phone == phone
    words = [w for w in re.split(r"[\s,]+", q.lower()) if w][:MAX_NAME_WORDS]
    if not words:
        raise SearchError("Type a name, an email or a phone number.")
    first, last = sa.func.lower(Patient.first_name), sa.func.lower(Patient.last_name)
    # Names have spaces of their own ("Mary Ann", "De La Cruz"): the words are one name (first or
    # last) or split once into first + last, in either order ("Ana De La Cruz", "Garcia, Ana").
    # Every branch is a range on a name index, so only matching patients are read.
    whole = " ".join(words)
    branches = [_prefix(last, whole), _prefix(first, whole)]
    if len(words) == 1:
        branches.append(_prefix(Patient.email, whole))  # "noah.ramirez": the start of an email
    for k in range(1, len(words)):
        a, b = " ".join(words[:k]), " ".join(words[k:])
        branches += [sa.and_(_prefix(last, b), _prefix(first, a)), sa.and_(_prefix(last, a), _prefix(first, b))]
    return sa.or_(*branches)


def _prefix(expr, prefix: str):
    """``expr LIKE 'prefix%'`` written as an index-friendly range on both databases."""
    # The first text after every one that starts with ``prefix``: its last character one higher,
    # after dropping trailing U+10FFFF (no character is higher). Nothing is above "\U0010ffff..." alone.
    head = prefix.rstrip("\U0010ffff")
    if not head:
        return expr >= prefix
    return sa.and_(expr >= prefix, expr < head[:-1] + chr(ord(head[-1]) + 1))


def _day_start(day: date, tz: str) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=zone(tz)).astimezone(UTC)


def search_patient_ids(session, f: Filters, cap: int = SEARCH_CAP) -> list[int]:
    """The ids of the patients a search (with the state filter) matches, at most ``cap``.

    Resolved first, as a list: the leads query then reads exactly those patients' leads through
    ``ix_leads_patient_condition`` (patient_id first). As a subquery, a misestimated match count could send PostgreSQL
    walking all leads newest-first looking for the few that match (seconds at a million).
    """
    where = [patient_search_clause(f.q)]
    if f.state:
        where.append(Patient.state == f.state)
    ids = list(session.scalars(sa.select(Patient.id).where(*where).limit(cap + 1)))
    if len(ids) > cap:
        raise SearchError(
            f"More than {cap:,} patients match {f.q!r}: type more of the name, or the full email or phone number."
        )
    return ids


def apply_filters(stmt: sa.Select, f: Filters, user: User, patient_ids: list[int] | None = None) -> sa.Select:
    if f.status:
        stmt = stmt.where(Lead.status == LeadStatus(f.status).value)
    if f.condition_id:
        stmt = stmt.where(Lead.condition_id == f.condition_id)
    if f.source:
        if f.source.startswith("webhook:"):
            stmt = stmt.where(Lead.webhook_source_id == int(f.source.split(":", 1)[1]))
        else:
            stmt = stmt.where(Lead.source_kind == LeadSourceKind(f.source).value)
    if f.assignee == "me":
        stmt = stmt.where(Lead.assignee_id == user.id)
    elif f.assignee == "none":
        stmt = stmt.where(Lead.assignee_id.is_(None))
    elif f.assignee:
        stmt = stmt.where(Lead.assignee_id == int(f.assignee))
    tz = user.timezone or "America/New_York"
    if f.created_from:
        stmt = stmt.where(Lead.created_at >= _day_start(f.created_from, tz))
    if f.created_to:
        stmt = stmt.where(Lead.created_at < _day_start(f.created_to + timedelta(days=1), tz))
    if patient_ids is not None:  # a search, resolved by search_patient_ids (state included)
        stmt = stmt.where(Lead.patient_id.in_(patient_ids))
    elif f.q:
        stmt = stmt.where(
            Lead.patient_id.in_(
                sa.select(Patient.id).where(
                    patient_search_clause(f.q), *([Patient.state == f.state] if f.state else [])
                )
            )
        )
    elif f.state:
        stmt = stmt.where(Lead.patient_id.in_(sa.select(Patient.id).where(Patient.state == f.state)))
    return stmt


def view_select(view: str, user: User, f: Filters, now: datetime, patient_ids: list[int] | None = None) -> sa.Select:
    """The rows of one view (mine-first ordering of ``due`` is done by ``queue_page``)."""
    stmt = apply_filters(_base(), f, user, patient_ids)
    if view == "unassigned":
        return stmt.where(Lead.assignee_id.is_(None), OPEN).order_by(
            Lead.priority.desc(), Lead.created_at.asc(), Lead.id.asc()
        )
    if view == "mine":
        return stmt.where(Lead.assignee_id == user.id, OPEN).order_by(
            Lead.next_follow_up_at.asc().nulls_last(), Lead.created_at.asc(), Lead.id.asc()
        )
    if view == "due":
        return stmt.where(Lead.next_follow_up_at <= now, OPEN).order_by(Lead.next_follow_up_at.asc(), Lead.id.asc())
    # A closed test delivery (crm/services/sources.py mark_test_lead) is nobody's work: neither listed
    # nor found by a search. One still open (the admin chose to watch it) is listed until closed.
    return stmt.where(sa.or_(sa.not_(Lead.is_test), OPEN)).order_by(Lead.created_at.desc(), Lead.id.desc())


def mine_segments(user: User, f: Filters, now: datetime, ids: list[int] | None = None) -> list[sa.Select]:
    """Mine, most pressing first, as index-ordered parts of ``view_select("mine")``: follow-ups
    due or overdue; leads with no next step (new ones waiting for their first call, the oldest
    first); upcoming follow-ups; booked leads with nothing planned (their visit is the next step)."""
    mine = view_select("mine", user, f, now, ids)
    no_step = Lead.next_follow_up_at.is_(None)
    booked = Lead.status == LeadStatus.BOOKED.value
    return [
        mine.where(Lead.next_follow_up_at <= now),
        mine.where(no_step, ~booked),
        mine.where(Lead.next_follow_up_at > now),
        mine.where(no_step, booked),
    ]


def _segmented_page(session, segments: list[sa.Select], page: int, per_page: int, *, ordered: bool) -> QueuePage:
    """One page across ``segments`` shown one after the other (each capped-counted, then only
    the parts the page falls in are fetched)."""
    offset = (page - 1) * per_page
    # Each part is counted far enough to place this page (a part of thousands would otherwise
    # stop at COUNT_CAP and hide its later rows); totals past COUNT_CAP still show as "500+".
    cap = max(COUNT_CAP, offset + per_page + 1)
    counts = [capped_count(session, seg, cap, ordered=ordered) for seg in segments]
    items: list[Lead] = []
    skip = offset
    for seg, (n, _) in zip(segments, counts, strict=True):
        if len(items) >= per_page:
            break
        if skip >= n:
            skip -= n
            continue
        items += _fetch(session, seg, skip, per_page - len(items))
        skip = 0
    total = sum(n for n, _ in counts)
    capped = any(c for _, c in counts) or total > COUNT_CAP
    return QueuePage(
        items=items,
        page=page,
        per_page=per_page,
        has_next=offset + len(items) < total or any(c for _, c in counts),
        total=min(total, COUNT_CAP) if capped else total,
        capped=capped,
    )


def capped_count(session, stmt: sa.Select, cap: int = COUNT_CAP, *, ordered: bool = False) -> tuple[int, bool]:
    """``count(*)`` over at most ``cap + 1`` rows of ``stmt``.

    ``ordered`` keeps the view's ORDER BY: PostgreSQL then walks the view's index in order and
    stops after ``cap + 1`` entries, where an unordered count would build a bitmap of the whole
    range first. Used for the unfiltered views only: with a rare filter (a small state) the
    bitmap is the better plan.
    """
    inner = stmt.with_only_columns(Lead.id)
    if not ordered:
        inner = inner.order_by(None)
    inner = inner.limit(cap + 1).subquery()
    n = session.scalar(sa.select(sa.func.count()).select_from(inner)) or 0
    return min(n, cap), n > cap


def _fetch(session, stmt: sa.Select, offset: int, limit: int) -> list[Lead]:
    """One page of leads: the ids first (an index walk), then those rows with their patient,
    condition and assignee. Joining first would make the database join every matching lead
    (hundreds for a common surname) before sorting and cutting to the page."""
    ids = list(session.scalars(stmt.with_only_columns(Lead.id).offset(offset).limit(limit)))
    if not ids:
        return []
    rows = session.scalars(
        sa.select(Lead)
        .where(Lead.id.in_(ids))
        .options(joinedload(Lead.patient), joinedload(Lead.condition), joinedload(Lead.assignee))
    ).unique()
    by_id = {lead.id: lead for lead in rows}
    return [by_id[i] for i in ids if i in by_id]


def queue_page(
    session,
    view: str,
    user: User,
    f: Filters,
    *,
    page: int = 1,
    per_page: int = PER_PAGE,
    now: datetime | None = None,
) -> QueuePage:
    now = now or datetime.now(UTC)
    view = view if view in VIEWS else "unassigned"
    page = max(1, min(page, MAX_PAGE))
    ids = search_patient_ids(session, f) if f.q else None
    result = _page_of(session, view, user, f, page, per_page, now, ids)
    if page > 1 and not result.items:
        # Past the end (the list shrank while someone was on a later page, or a typed page
        # number): the last page, not "page 40 of 39" with nothing on it.
        total, _ = capped_count(session, view_select(view, user, f, now, ids))
        last = max(1, -(-total // per_page))
        if last < page:
            result = _page_of(session, view, user, f, last, per_page, now, ids)
    return result


def _page_of(
    session, view: str, user: User, f: Filters, page: int, per_page: int, now: datetime, ids: list[int] | None
) -> QueuePage:
    offset = (page - 1) * per_page
    if view == "due":
        return _due_page(session, user, f, page, per_page, now, ids)
    if view == "mine":
        return _segmented_page(session, mine_segments(user, f, now, ids), page, per_page, ordered=not f.active())
    stmt = view_select(view, user, f, now, ids)
    rows = _fetch(session, stmt, offset, per_page + 1)
    result = QueuePage(items=rows[:per_page], page=page, per_page=per_page, has_next=len(rows) > per_page)
    if not result.has_next:
        # The last page: the total is known without counting (a search usually fits on one page).
        result.total = offset + len(result.items)
    elif view != "all" or f.q:
        result.total, result.capped = capped_count(session, stmt, ordered=not f.active())
    return result


def _due_page(
    session, user: User, f: Filters, page: int, per_page: int, now: datetime, ids: list[int] | None
) -> QueuePage:
    """Due and overdue follow-ups, mine first: two index-ordered queries stitched together."""
    due = view_select("due", user, f, now, ids)
    mine = due.where(Lead.assignee_id == user.id)
    others = due.where(sa.or_(Lead.assignee_id.is_(None), Lead.assignee_id != user.id))
    ordered = not f.active()
    offset = (page - 1) * per_page
    # Mine first: fetching one row more than the page tells whether the mine part is all here,
    # and then its count is known without a COUNT query (a specialist has tens of leads).
    mine_rows = _fetch(session, mine, offset, per_page + 1) if page == 1 else []
    if page == 1 and len(mine_rows) <= per_page:
        mine_total = len(mine_rows)
    else:
        mine_total, _ = capped_count(session, mine, ordered=ordered)
    items: list[Lead] = []
    if offset < mine_total:
        items = mine_rows[:per_page] if page == 1 else _fetch(session, mine, offset, per_page)
        rest = _fetch(session, others, 0, per_page + 1 - len(items))
    else:
        rest = _fetch(session, others, offset - mine_total, per_page + 1)
    combined = items + rest
    others_shown = len(rest)
    if offset >= mine_total and others_shown <= per_page:
        others_total, capped = offset - mine_total + others_shown, False
    elif offset < mine_total and others_shown <= per_page - len(items):
        others_total, capped = others_shown, False
    else:
        others_total, capped = capped_count(session, others, ordered=ordered)
    return QueuePage(
        items=combined[:per_page],
        page=page,
        per_page=per_page,
        has_next=len(combined) > per_page or offset + len(items) < mine_total,
        total=mine_total + others_total,
        capped=capped,
        mine_count=mine_total,
    )
