"""sqlite unicode lower: rebuild the name-search indexes with the Unicode-aware lower()

Revision ID: 0009_sqlite_unicode_lower
Revises: 0008_drop_redundant_indexes
Create Date: 2026-12-01 08:00:00

Hand-written. Every SQLite connection the app opens now replaces SQLite's ASCII-only lower()
with Python's (crm/extensions.py), so a search for "ñúñez" finds "Ñúñez" as it does on
PostgreSQL. Entries of the expression indexes written before were computed with the old
function: REINDEX recomputes them (through this connection, so with the new one). Nothing to do
on PostgreSQL, whose lower() already folds every letter.
"""
from alembic import op


revision = '0009_sqlite_unicode_lower'
down_revision = '0008_drop_redundant_indexes'
branch_labels = None
depends_on = None

NAME_INDEXES = ("ix_patients_lower_last_name", "ix_patients_lower_first_name")


def upgrade():
    if op.get_bind().dialect.name == "sqlite":
        for name in NAME_INDEXES:
            op.execute(f"REINDEX {name}")


def downgrade():
    pass  # no schema change to undo
