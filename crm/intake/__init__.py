"""Public intake: condition pages, the request form, the intake webhook."""
