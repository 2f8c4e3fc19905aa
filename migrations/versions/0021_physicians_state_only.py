"""physicians state centre unlocated: a physician placed only at a state's centre has no location

Revision ID: 0021_physicians_state_only
Revises: 0020_appointment_outcome_asked
Create Date: 2026-12-03 15:40:00

Hand-written, data only. Until now a physician whose address the geocoder could place only in its
state kept the state's centre as coordinates, and matching measured in-person distances from it (a
physician "3 miles away" from every patient near the middle of Florida). ``geocode_physician`` no
longer stores such a point (docs/matching.md); this does the same to the rows stored before: no
coordinates, ``failed`` with the reason, so the directory's "Not located" filter lists them for an admin
to correct. On SQLite the R*Tree triggers (migration 0003) take them out of the spatial index.
Downgrade leaves them as they are: the old point was never a location.
"""
from alembic import op


revision = '0021_physicians_state_only'
down_revision = '0020_appointment_outcome_asked'
branch_labels = None
depends_on = None

STATE_ONLY = "located only to the state: check the street, city and ZIP"


def upgrade():
    op.execute(
        "UPDATE physicians SET latitude = NULL, longitude = NULL, geocode_precision = NULL, "
        f"geocode_status = 'failed', geocode_next_at = NULL, geocode_error = '{STATE_ONLY}' "
        "WHERE geocode_precision = 'state'"
    )


def downgrade():
    pass
