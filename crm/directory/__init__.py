"""The read-only physician directory for specialists (/physicians)."""
