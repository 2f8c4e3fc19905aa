"""Admin workbench: directory, programs, conditions, users, sources, inbox, audit."""
