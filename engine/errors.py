"""Errors a user can cause, each carrying one sentence that says what to do."""

from __future__ import annotations


class QuantDeskError(Exception):
    """A problem the user can fix; str(err) is the one line shown to them."""


class JobCancelled(QuantDeskError):
    """The user cancelled the job; nothing was left behind."""

    def __init__(self, message: str = "Cancelled; nothing was written.") -> None:
        super().__init__(message)
