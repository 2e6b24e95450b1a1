"""Client-server API routes: sync."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps
    from trioserver.api.http import Route

ROUTES: list[Route[ApiDeps]] = []
