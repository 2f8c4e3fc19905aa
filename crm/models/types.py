"""Column types."""

from __future__ import annotations

import sqlalchemy as sa


def StrEnumType(enum_cls, length: int = 32) -> sa.Enum:  # noqa: N802 - reads like a type
    """Store a StrEnum by its value as VARCHAR, without a CHECK constraint.

    No native enum and no constraint, so adding a member never needs a migration;
    services validate values before they reach the database.
    """
    return sa.Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )
