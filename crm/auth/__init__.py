"""Sign-in, sign-out and the shift toggle."""
