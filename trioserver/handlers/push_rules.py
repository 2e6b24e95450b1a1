"""A stand-in for the ``pushrules`` branch's handler (merging that branch replaces it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.push.evaluator import CompiledPushRules

if TYPE_CHECKING:
    from collections.abc import Iterable

_DEFAULTS = CompiledPushRules()


class PushRulesHandler:
    """Every user's compiled rules (here: the defaults)."""

    async def rules_for_users(self, user_ids: Iterable[str]) -> dict[str, CompiledPushRules]:
        """The compiled rules of each user."""
        return dict.fromkeys(user_ids, _DEFAULTS)
