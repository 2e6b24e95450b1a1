"""Push rules (stand-in until the ``pushrules`` branch is merged)."""
