"""spatial index for matching: SQLite R*Tree kept in step by triggers, PostgreSQL GiST

Revision ID: 0003_spatial_index
Revises: 0002_queue_indexes
Create Date: 2026-11-25 10:00:00

Matching (crm/services/matching.py) reads the physicians around a patient with bounding-box
queries. The B-tree ``ix_physicians_lat_lon`` can only range over latitude: a box scans the whole
latitude band across the country, then reads each row from the table. Measured at 100,000
physicians that was most of the time of a match (docs/matching.md), so:

* SQLite: an R*Tree ``physicians_rtree`` (one degenerate box per located physician) whose
  auxiliary columns carry the exact coordinates and the fields the first pass of matching needs,
  so a box query touches neither a latitude band nor the physicians table. Triggers keep it in step
  with ``physicians`` on every insert, update and delete; migrations/env.py leaves "rtree" tables
  out of autogenerate. The telehealth search (priority 1, telehealth, accepting: about a tenth of
  the directory) has its own partial B-tree ``ix_physicians_telehealth_p1``: filtering R*Tree rows
  by auxiliary columns would still read every physician in the box.
* PostgreSQL: GiST indexes on ``point(longitude, latitude)``, one for every active physician and a
  partial one for the telehealth search (priority 1, telehealth, accepting); their expressions and
  WHERE clause are written exactly as the queries spell them.
"""

from alembic import op
import sqlalchemy as sa


revision = "0003_spatial_index"
down_revision = "0002_queue_indexes"
branch_labels = None
depends_on = None

AUX = "active, accepting_new, offers_in_person, offers_telehealth, priority, weekly_capacity"
NEW_ROW = (
    "new.id, new.latitude, new.latitude, new.longitude, new.longitude, new.latitude, new.longitude, "
    "new.active, new.accepting_new, new.offers_in_person, new.offers_telehealth, new.priority, new.weekly_capacity"
)
TELEHEALTH_P1 = "active AND accepting_new AND offers_telehealth AND priority = 1"


# Constants only below (no input reaches these statements).
# ruff: noqa: S608


def upgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE physicians_rtree USING rtree("
            "id, min_lat, max_lat, min_lon, max_lon, +lat, +lon, "
            "+active, +accepting_new, +offers_in_person, +offers_telehealth, +priority, +weekly_capacity)"
        )
        op.execute(
            "INSERT INTO physicians_rtree SELECT id, latitude, latitude, longitude, longitude, latitude, longitude, "
            f"{AUX} FROM physicians WHERE latitude IS NOT NULL AND longitude IS NOT NULL"
        )
        op.execute(
            "CREATE TRIGGER physicians_rtree_insert AFTER INSERT ON physicians "
            "WHEN new.latitude IS NOT NULL AND new.longitude IS NOT NULL BEGIN "
            f"INSERT INTO physicians_rtree VALUES ({NEW_ROW}); END"
        )
        op.execute(
            "CREATE TRIGGER physicians_rtree_update AFTER UPDATE ON physicians BEGIN "
            "DELETE FROM physicians_rtree WHERE id = old.id; "
            f"INSERT INTO physicians_rtree SELECT {NEW_ROW} "
            "WHERE new.latitude IS NOT NULL AND new.longitude IS NOT NULL; END"
        )
        op.execute(
            "CREATE TRIGGER physicians_rtree_delete AFTER DELETE ON physicians BEGIN "
            "DELETE FROM physicians_rtree WHERE id = old.id; END"
        )
        op.create_index(
            "ix_physicians_telehealth_p1",
            "physicians",
            ["latitude", "longitude"],
            sqlite_where=sa.text(TELEHEALTH_P1),
        )
    elif dialect == "postgresql":
        op.execute(
            "CREATE INDEX ix_physicians_location_gist ON physicians USING gist (point(longitude, latitude)) "
            "WHERE active"
        )
        op.execute(
            "CREATE INDEX ix_physicians_telehealth_p1_gist ON physicians USING gist (point(longitude, latitude)) "
            f"WHERE {TELEHEALTH_P1}"
        )


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.drop_index("ix_physicians_telehealth_p1", table_name="physicians")
        for trigger in ("physicians_rtree_insert", "physicians_rtree_update", "physicians_rtree_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS physicians_rtree")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_physicians_telehealth_p1_gist")
        op.execute("DROP INDEX IF EXISTS ix_physicians_location_gist")
