"""Errors a user can act on. ``tools/run.py`` prints them as one paragraph and exits non-zero (no traceback)."""


class UserError(Exception):
    """A problem with the user's configuration, files or machine, explained in the message."""
