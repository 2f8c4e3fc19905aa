"""Is this lead eligible under its state's program? Pure logic, then a thin adapter for leads.

``evaluate`` takes plain values and returns a JSON-ready dict with every check in words, so it is
testable without Flask or a database. Rules (SPEC 2.4): is there a medical program in the state;
is the condition qualifying, or left to physician discretion; is the patient old enough; may the
certification happen by telehealth. The seed data is best knowledge, so every result carries the
registry link and review date for the specialist to verify.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

PASS, FAIL, UNKNOWN, NOTE = "pass", "fail", "unknown", "note"
PROGRAM_WORDS = {
    "medical": "a medical cannabis program",
    "medical_and_adult_use": "a medical cannabis program (and adult use)",
    "cbd_only": "only a low-THC / CBD program",
    "none": "no medical cannabis program",
}


@dataclass(frozen=True)
class ProgramFacts:
    state: str
    name: str
    program_type: str
    qualifying: frozenset[str] = field(default_factory=frozenset)  # condition slugs
    physician_discretion: bool = False
    telehealth_allowed: bool = False
    minimum_age: int = 18
    registry_url: str = ""
    reviewed_on: date | None = None

    @property
    def has_medical_program(self) -> bool:
        return self.program_type in ("medical", "medical_and_adult_use")


@dataclass(frozen=True)
class ConditionFacts:
    slug: str
    name: str


def condition_words(name: str) -> str:
    """'Dystonia' -> 'dystonia' for use mid-sentence; acronyms and proper names (PTSD, Crohn's) stay."""
    first = name.split(" ")[0]
    if len(name) > 1 and name[1].islower() and "'" not in first and first not in ("Tourette", "Lou"):
        return name[0].lower() + name[1:]
    return name


def age_on(born: date | None, today: date) -> int | None:
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def evaluate(
    *,
    state: str | None,
    program: ProgramFacts | None,
    condition: ConditionFacts | None,
    age: int | None,
    age_confirmed: bool = False,
    wants_telehealth: bool = False,
) -> dict:
    """The eligibility verdict with a sentence per check.

    ``eligible`` is True (every check passed), False (a check failed) or None (something is not
    known yet: state, condition or age). ``telehealth_allowed`` tells matching whether to build a
    telehealth list.
    """
    checks: list[dict] = []

    def check(rule: str, status: str, text: str) -> None:
        checks.append({"rule": rule, "status": status, "text": text})

    out: dict = {"state": state or None, "program": None, "telehealth_allowed": False}
    if not state:
        check("state", UNKNOWN, "The patient's state is not known yet: locate the address first.")
    elif program is None or program.program_type == "none":
        check("program", FAIL, f"No medical cannabis program in {state}.")
    elif not program.has_medical_program:
        check("program", FAIL, f"{program.name} has {PROGRAM_WORDS[program.program_type]}, not a medical card.")
    else:
        check("program", PASS, f"{program.name} has {PROGRAM_WORDS[program.program_type]}.")

    if program is not None:
        out["program"] = {
            "state": program.state,
            "name": program.name,
            "type": program.program_type,
            "minimum_age": program.minimum_age,
            "physician_discretion": program.physician_discretion,
            "telehealth_allowed": program.telehealth_allowed,
            "registry_url": program.registry_url,
            "reviewed_on": program.reviewed_on.isoformat() if program.reviewed_on else None,
        }

    if program is not None and program.has_medical_program:
        if condition is None:
            check("condition", UNKNOWN, "No condition chosen yet: confirm it with the patient.")
        elif condition.slug in program.qualifying:
            check("condition", PASS, f"{condition.name} is a qualifying condition in {program.state}.")
        elif program.physician_discretion:
            check(
                "condition",
                PASS,
                f"{condition.name} is not listed in {program.state}, "
                "but physicians may certify it at their discretion.",
            )
        else:
            check("condition", FAIL, f"{condition.name} is not a qualifying condition in {program.state}.")

        minimum = program.minimum_age
        if age is not None:
            if age < minimum:
                check("age", FAIL, f"Under the minimum age of {minimum} in {program.state} (the patient is {age}).")
            else:
                check("age", PASS, f"Meets the minimum age of {minimum}.")
        elif age_confirmed and minimum <= 18:
            check("age", PASS, f"Confirmed adult (minimum age {minimum}).")
        else:
            check("age", UNKNOWN, f"Age not confirmed: {program.state} requires {minimum} or older.")

        if program.telehealth_allowed:
            out["telehealth_allowed"] = True
            check("telehealth", PASS, f"{program.state} allows certification by telehealth.")
        else:
            asked = " the patient asked for telehealth, but" if wants_telehealth else ""
            check(
                "telehealth",
                NOTE,
                f"Telehealth certification is not allowed in {program.state}:{asked} an in-person visit is needed.",
            )

    statuses = {c["status"] for c in checks}
    eligible = False if FAIL in statuses else (None if UNKNOWN in statuses else True)
    out["eligible"] = eligible
    out["checks"] = checks
    out["reasons"] = [c["text"] for c in checks if c["status"] in (FAIL, UNKNOWN)]
    out["summary"] = summary(eligible, state, program, checks)
    return out


_LOWER_AFTER_COLON = frozenset({"No", "Under"})  # the check texts that start with a common word


def summary(eligible: bool | None, state: str | None, program: ProgramFacts | None, checks: Iterable[dict]) -> str:
    where = program.name if program is not None else (state or "an unknown state")
    if eligible is True:
        return f"Eligible in {where}."
    failed = [c["text"] for c in checks if c["status"] == FAIL]
    if eligible is False:
        reason = failed[0].rstrip(".")
        if reason.split(" ", 1)[0] in _LOWER_AFTER_COLON:  # not a name: "Texas has only ..." keeps its capital
            reason = reason[0].lower() + reason[1:]
        return f"Not eligible in {where}: {reason}."
    return f"Not decided yet for {where}: a fact is missing."


# --------------------------------------------------------------------------- adapter for leads


def program_facts(program) -> ProgramFacts:
    """A StateProgram row as plain facts."""
    return ProgramFacts(
        state=program.state,
        name=program.name,
        program_type=str(program.program_type),
        qualifying=frozenset(c.slug for c in program.qualifying_conditions),
        physician_discretion=bool(program.physician_discretion),
        telehealth_allowed=bool(program.telehealth_allowed),
        minimum_age=int(program.minimum_age or 0),
        registry_url=program.registry_url or "",
        reviewed_on=program.reviewed_on,
    )


_PROGRAM_COLUMNS = (
    "sp.state, sp.name, sp.program_type, sp.physician_discretion, sp.telehealth_allowed, "
    "sp.minimum_age, sp.registry_url, sp.reviewed_on, c.slug"
)
_PROGRAM_FROM = (
    "FROM state_programs sp "
    "LEFT JOIN state_program_conditions spc ON spc.state_program_id = sp.id "
    "LEFT JOIN conditions c ON c.id = spc.condition_id WHERE sp.state = {param}"
)
_PROGRAM_SQL = f"SELECT {_PROGRAM_COLUMNS} {_PROGRAM_FROM}"  # noqa: S608 - constants only
# The same rows as one JSON value (PostgreSQL, psycopg's named style), for a statement that brings
# the program along with other things: matching's nearest-neighbour read (one round trip a lead).
PROGRAM_ROWS_JSON_PG = (
    f"(SELECT json_agg(json_build_array({_PROGRAM_COLUMNS})) {_PROGRAM_FROM.format(param='%(state)s')})"  # noqa: S608
)


def load_program(state: str) -> ProgramFacts | None:
    """The state's program as facts: one small query on the session's DBAPI connection (matching
    calls this for every lead, and SQLAlchemy's per-statement work would cost more than the query)."""
    from crm.extensions import db

    conn = db.session.connection()
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(_PROGRAM_SQL.format(param="?" if conn.dialect.name == "sqlite" else "%s"), (state,))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return program_from_rows(rows)


def program_from_rows(rows) -> ProgramFacts | None:
    """Facts from the program query's rows (one per qualifying condition), as tuples or JSON arrays."""
    if not rows:
        return None
    st, name, program_type, discretion, telehealth, minimum_age, registry_url, reviewed_on, _slug = rows[0]
    if isinstance(reviewed_on, str):  # SQLite and JSON hand dates back as text
        reviewed_on = date.fromisoformat(reviewed_on)
    return ProgramFacts(
        state=st,
        name=name,
        program_type=str(program_type),
        qualifying=frozenset(r[-1] for r in rows if r[-1]),
        physician_discretion=bool(discretion),
        telehealth_allowed=bool(telehealth),
        minimum_age=int(minimum_age or 0),
        registry_url=registry_url or "",
        reviewed_on=reviewed_on,
    )


LOOK_UP = object()  # evaluate_lead: no program given, load it


def evaluate_lead(lead, today: date, program=LOOK_UP) -> dict:
    """Evaluate a Lead against its patient's state program (loaded unless the caller read it
    already: ``ProgramFacts`` or None for "no program")."""
    patient = lead.patient
    state = (patient.state or "").upper() or None
    if program is LOOK_UP:
        program = load_program(state) if state else None
    condition = ConditionFacts(lead.condition.slug, lead.condition.name) if lead.condition is not None else None
    return evaluate(
        state=state,
        program=program,
        condition=condition,
        age=age_on(patient.date_of_birth, today),
        age_confirmed=bool(patient.age_confirmed),
        wants_telehealth=str(lead.preferred_mode) == "telehealth",
    )
