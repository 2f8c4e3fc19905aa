"""Filters for the read-only physician directory."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SearchField, SelectField
from wtforms.validators import Length, Optional

from crm.services.contact import US_STATES
from crm.services.directory import PhysicianFilters

YES_ANY = [("", "Any"), ("yes", "Yes"), ("no", "No")]


class DirectoryFilterForm(FlaskForm):
    class Meta:
        csrf = False  # GET filters

    q = SearchField("Search", validators=[Optional(), Length(max=100)])
    state = SelectField(
        "State",
        choices=[("", "Any state")] + [(c, f"{c} · {n}") for c, n in sorted(US_STATES.items())],
        validators=[Optional()],
    )
    telehealth = SelectField("Telehealth", choices=YES_ANY, validators=[Optional()])
    accepting = SelectField("Accepting new", choices=YES_ANY, validators=[Optional()])

    def filters(self) -> PhysicianFilters:
        def pick(field):
            return field.data if field.data in {c[0] for c in field.choices} else ""

        return PhysicianFilters(
            q=(self.q.data or "").strip()[:100],
            state=pick(self.state),
            active="yes",  # specialists only ever see active physicians
            accepting=pick(self.accepting),
            telehealth=pick(self.telehealth),
        )
