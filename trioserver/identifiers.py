"""Rules for the user ids this server hands out (the grammar itself: `events.identifiers`)."""

from __future__ import annotations

import re

# Appendices, "User Identifiers": the grammar a new local user must satisfy (lower case only;
# `+` was added by MSC4009). Synapse also keeps localparts starting with `_` for appservices.
_NEW_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+")

MAX_USER_ID_LENGTH = 255


def is_valid_new_localpart(localpart: str) -> bool:
    """Whether a new local user may take this localpart (before the length check)."""
    return _NEW_LOCALPART.fullmatch(localpart) is not None and not localpart.startswith("_")
