"""A real client library (matrix-nio, not ours) runs its sync loop against the server."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from trioserver.testing import InProcessServer

SCENARIO = Path(__file__).with_name("nio_scenario.py")


async def test_matrix_nio_session(hs: InProcessServer) -> None:
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, str(SCENARIO), hs.base_url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()
    steps = [line for line in output.splitlines() if line.startswith("step: ")]
    assert steps == [
        "step: registered",
        "step: invite seen",
        "step: message received",
        "step: typing seen",
        "step: receipt seen",
        "step: reply received",
    ]
    assert output.splitlines()[-1] == "ok"
