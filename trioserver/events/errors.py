"""Exceptions raised by the events package."""

from __future__ import annotations


class InvalidEventError(ValueError):
    """A PDU does not have the format its room version requires.

    Per the server-server API ("Checks performed on receipt of a PDU", step 1)
    such an event is dropped, not rejected.
    """


class EventTooLargeError(InvalidEventError):
    """A PDU exceeds the 65536-byte limit (clients get 413 ``M_TOO_LARGE``)."""


class InvalidIdentifierError(ValueError):
    """A Matrix identifier (user ID, room ID, server name, ...) is malformed."""


class AuthError(Exception):
    """An event fails the authorisation rules of its room version.

    Attributes:
        reason: A human-readable explanation naming the rule that failed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventSignatureError(Exception):
    """An event's signature or content hash could not be verified."""
