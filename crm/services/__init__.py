"""Business logic: plain functions taking explicit arguments. They flush; the caller commits."""
