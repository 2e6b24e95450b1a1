"""`InteractiveAuth.remember_result`: what a completed registration session produced is served
again for that session and operation, until the session lifetime has passed."""

from __future__ import annotations

from trioserver.handlers.uia import SESSION_LIFETIME_S, InteractiveAuth


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _body(session: str | None) -> dict[str, object]:
    auth: dict[str, object] = {"type": "m.login.dummy"}
    if session is not None:
        auth["session"] = session
    return {"auth": auth}


def test_result_is_bound_to_session_and_operation() -> None:
    clock = _Clock()
    uia = InteractiveAuth(clock)
    uia.remember_result(_body("s1"), "POST /register", "@a:hs")
    assert uia.remembered_result(_body("s1"), "POST /register") == "@a:hs"
    assert uia.remembered_result(_body("s1"), "POST /other") is None
    assert uia.remembered_result(_body("s2"), "POST /register") is None
    assert uia.remembered_result(_body(None), "POST /register") is None
    assert uia.remembered_result({"auth": "x"}, "POST /register") is None


def test_result_expires_with_the_session_lifetime() -> None:
    clock = _Clock()
    uia = InteractiveAuth(clock)
    uia.remember_result(_body("s1"), "POST /register", "@a:hs")
    clock.now += SESSION_LIFETIME_S
    assert uia.remembered_result(_body("s1"), "POST /register") == "@a:hs"
    clock.now += 1
    assert uia.remembered_result(_body("s1"), "POST /register") is None


def test_without_a_session_nothing_is_remembered() -> None:
    uia = InteractiveAuth(_Clock())
    uia.remember_result(_body(None), "POST /register", "@a:hs")
    assert uia.remembered_result(_body(None), "POST /register") is None
