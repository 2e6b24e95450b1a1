"""A graceful stop answers long-polls at once instead of waiting for their timeouts (issue 10).

Runs a real `trioserver` process: SIGTERM while a client long-polls `/sync`.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

import trio

from tests.integration.client import V3, assert_ok
from tests.integration.test_cli import admin_register_body, server_process, shared_secret

# Well under the 10 s default http.graceful_shutdown_seconds the stop used to wait for.
PROMPT_S = 2.5


async def test_sigterm_answers_a_long_poll_and_exits_promptly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            body = await admin_register_body(http, shared_secret(data_dir), "lena", "lenapw")
            user = assert_ok(await http.post("/_synapse/admin/v1/register", json=body))
            auth = {"Authorization": f"Bearer {user['access_token']}"}
            since = assert_ok(await http.get(f"{V3}/sync", headers=auth))["next_batch"]
            answers: list[tuple[float, httpx.Response]] = []

            async def long_poll() -> None:
                params = {"since": since, "timeout": "30000"}
                response = await http.get(f"{V3}/sync", params=params, headers=auth)
                answers.append((trio.current_time(), response))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                # A real process gives no signal that the request has reached its wait; give
                # it ample time, then check that it is indeed still waiting.
                await trio.sleep(0.5)
                assert not answers, answers[0][1].text
                stopped_at = trio.current_time()
                server.process.send_signal(signal.SIGTERM)
                with trio.fail_after(PROMPT_S):
                    assert await server.process.wait() == 0, server.output()
                exited_after = trio.current_time() - stopped_at
        assert exited_after < PROMPT_S
        [(answered_at, response)] = answers
        assert answered_at - stopped_at < PROMPT_S
        sync = assert_ok(response)
        assert isinstance(sync["next_batch"], str)
        assert sync["next_batch"]

    # The token is a real one: the next start continues from it.
    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            params = {"since": sync["next_batch"], "timeout": "0"}
            assert "next_batch" in assert_ok(
                await http.get(f"{V3}/sync", params=params, headers=auth)
            )
        assert await server.stop() == 0, server.output()


async def test_sigterm_with_no_requests_exits_promptly(tmp_path: Path) -> None:
    async with server_process("--data-dir", tmp_path / "data", cwd=tmp_path) as server:
        # An idle keep-alive connection must not hold the stop either.
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert_ok(await http.get("/_matrix/client/versions"))
            stopped_at = trio.current_time()
            server.process.send_signal(signal.SIGTERM)
            with trio.fail_after(PROMPT_S):
                assert await server.process.wait() == 0, server.output()
        assert trio.current_time() - stopped_at < PROMPT_S
