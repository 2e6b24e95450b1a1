"""User-interactive authentication (client-server API, "User-Interactive Authentication API").

A UIA endpoint calls `InteractiveAuth.check` with the flows it accepts. Without a completed
flow the call raises `InteractiveAuthRequired`, rendered as 401 with ``flows``, ``params``,
``session`` and the stages ``completed`` so far (plus ``errcode``/``error`` when the stage just
presented failed). Sessions live in memory for a limited time and are bound to the method and
path that started them, so a session opened for one operation cannot authorise another.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from trioserver.errors import InteractiveAuthRequired, MatrixError

SESSION_LIFETIME_S = 30 * 60
_MAX_SESSIONS = 10_000

# Checks one stage; returns the user id it authenticated as (or "" for m.login.dummy), or
# raises MatrixError when the stage fails.
StageChecker = Callable[[dict[str, Any]], Awaitable[str]]


@attrs.define
class _Session:
    session_id: str
    operation: str
    created: float
    completed: dict[str, str] = attrs.field(factory=dict)
    # The request's other parameters, so that a client may send only `auth` in later steps.
    params: dict[str, Any] = attrs.field(factory=dict)


def _session_id(body: dict[str, Any]) -> str | None:
    auth = body.get("auth")
    session_id = auth.get("session") if isinstance(auth, dict) else None
    return session_id if isinstance(session_id, str) else None


class InteractiveAuth:
    """In-memory UIA sessions."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions: dict[str, _Session] = {}
        # What a completed session produced (the registered user id), by session id, with
        # the operation and the time: replaying a finished registration is idempotent.
        self._results: dict[str, tuple[str, float, str]] = {}
        self._clock = clock

    def remember_result(self, body: dict[str, Any], operation: str, result: str) -> None:
        """Record what the session in `body`'s ``auth`` produced once its flow completed."""
        session_id = _session_id(body)
        if session_id is not None:
            if len(self._results) >= _MAX_SESSIONS:
                del self._results[next(iter(self._results))]
            self._results[session_id] = (operation, self._clock(), result)

    def remembered_result(self, body: dict[str, Any], operation: str) -> str | None:
        """What `remember_result` stored for the session in `body`, while it has not expired."""
        session_id = _session_id(body)
        found = self._results.get(session_id) if session_id is not None else None
        if found is None or found[0] != operation:
            return None
        # An expired entry stays until the size bound evicts it; it is never served.
        return found[2] if self._clock() - found[1] <= SESSION_LIFETIME_S else None

    def with_stored_params(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body`, or the parameters stored in its session when it carries only ``auth``."""
        auth = body.get("auth")
        if set(body) != {"auth"} or not isinstance(auth, dict):
            return body
        session_id = auth.get("session")
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        return {**session.params, "auth": auth} if session is not None else body

    async def check(
        self,
        body: dict[str, Any],
        *,
        flows: list[list[str]],
        operation: str,
        checkers: dict[str, StageChecker],
    ) -> dict[str, str]:
        """Run the stage in `auth` (the request's ``auth`` dict) and check for a finished flow.

        Args:
            body: the request body; its ``auth`` value is the stage presented.
            flows: the accepted flows, each a list of stage types.
            operation: identifies the request (method and path); a session is bound to it.
            checkers: how to check each stage type.

        Returns:
            The completed stages, mapped to the user id each authenticated as.

        Raises:
            InteractiveAuthRequired: no flow is complete yet.
            MatrixError: the session is unknown or belongs to another operation.
        """
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError("M_INVALID_PARAM", "'auth' must be an object")
        auth = auth or {}
        session = self._session_for(auth.get("session"), operation)
        params = {k: v for k, v in body.items() if k != "auth"}
        if params:
            session.params = params
        if not auth:
            raise InteractiveAuthRequired(self._body(session, flows))
        error: dict[str, Any] = {}
        stage = auth.get("type")
        if stage is not None:
            checker = checkers.get(stage) if any(stage in f for f in flows) else None
            if checker is None:
                raise MatrixError("M_INVALID_PARAM", f"Unknown UIA stage type: {stage}")
            try:
                session.completed[stage] = await checker(auth)
            except MatrixError as err:
                error = {"errcode": err.errcode, "error": err.message}
        if any(all(s in session.completed for s in flow) for flow in flows):
            del self._sessions[session.session_id]
            return dict(session.completed)
        raise InteractiveAuthRequired({**self._body(session, flows), **error})

    def _session_for(self, session_id: Any, operation: str) -> _Session:
        now = self._clock()
        if session_id is None:
            self._expire(now)
            session = _Session(secrets.token_urlsafe(18), operation, now)
            self._sessions[session.session_id] = session
            return session
        found = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if found is None or now - found.created > SESSION_LIFETIME_S:
            raise MatrixError("M_UNKNOWN", f"Unknown session ID: {session_id}")
        if found.operation != operation:
            raise MatrixError(
                "M_FORBIDDEN",
                "Requested operation has changed during the UI authentication session.",
            )
        return found

    def _expire(self, now: float) -> None:
        if len(self._sessions) < _MAX_SESSIONS:
            return
        for session_id, session in list(self._sessions.items()):
            if now - session.created > SESSION_LIFETIME_S:
                del self._sessions[session_id]
        while len(self._sessions) >= _MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]

    @staticmethod
    def _body(session: _Session, flows: list[list[str]]) -> dict[str, Any]:
        return {
            "session": session.session_id,
            "flows": [{"stages": flow} for flow in flows],
            "params": {},
            "completed": list(session.completed),
        }
