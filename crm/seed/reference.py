"""Load the shipped reference data (state programs, conditions) without overwriting admin edits."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from crm.extensions import db
from crm.models import Condition, StateProgram
from crm.models.enums import ProgramType


def load_conditions() -> int:
    from crm.seed.conditions import CONDITIONS

    existing = set(db.session.scalars(sa.select(Condition.slug)))
    added = 0
    for row in CONDITIONS:
        if row["slug"] in existing:
            continue
        db.session.add(
            Condition(
                name=row["name"],
                slug=row["slug"],
                synonyms=list(row.get("synonyms", [])),
                summary=row.get("summary", ""),
                body=row.get("body", ""),
                published=row.get("published", True),
            )
        )
        added += 1
    db.session.flush()
    return added


def load_state_programs() -> int:
    from crm.seed.state_programs import STATE_PROGRAMS

    by_slug = {c.slug: c for c in db.session.scalars(sa.select(Condition))}
    existing = set(db.session.scalars(sa.select(StateProgram.state)))
    added = 0
    for row in STATE_PROGRAMS:
        if row["state"] in existing:
            continue
        reviewed = row.get("reviewed_on")
        db.session.add(
            StateProgram(
                state=row["state"],
                name=row["name"],
                program_type=ProgramType(row["program_type"]),
                physician_discretion=bool(row.get("physician_discretion")),
                telehealth_allowed=bool(row.get("telehealth_allowed")),
                minimum_age=int(row.get("minimum_age", 18)),
                patient_fee_note=row.get("patient_fee_note", ""),
                registry_url=row.get("registry_url", ""),
                reviewed_on=date.fromisoformat(reviewed) if reviewed else None,
                notes=row.get("notes", ""),
                qualifying_conditions=[by_slug[s] for s in row.get("qualifying_conditions", []) if s in by_slug],
            )
        )
        added += 1
    db.session.flush()
    return added


def load_reference_data() -> dict[str, int]:
    conditions = load_conditions()
    programs = load_state_programs()
    return {"conditions": conditions, "state_programs": programs}
