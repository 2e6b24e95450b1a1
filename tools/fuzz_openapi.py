"""Fuzz a real trioserver with schemathesis from the official Client-Server OpenAPI document.

    python tools/fuzz_openapi.py [--spec PATH] [--max-time SECONDS] [-- extra schemathesis args]

What it does: installs schemathesis into its own venv (cached under
``~/.cache/trioserver-fuzz/``, not a project dependency), starts ``trioserver run`` from this
checkout's environment in a temporary data dir (open registration, no rate limits, cheap
bcrypt), registers a user and creates a room, then runs schemathesis over every operation of the
document with the check ``not_a_server_error``: any 5xx answer is a failure (a 500 is always a
bug, DESIGN "HTTP edge"). Operations we do not implement answer 404 M_UNRECOGNIZED, which
passes that check.

Requests carry the user's access token, and the path parameters ``roomId``, ``roomIdOrAlias``
and ``userId`` are pinned to that room and user (a generated config file), so that requests
get past the token and room-membership checks into the handlers; every other parameter and
body is generated. Operations that would end the token (``/logout``, ``/logout/all``,
``/account/deactivate``) are left out, or every later request would only test the 401 path.

Exit status: schemathesis's (0 when no operation produced a 5xx). The server's log is printed
at the end when anything failed; it holds the traceback of every 500.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT.parent / "shared" / "spec" / "client-server.json"
VENV = Path.home() / ".cache" / "trioserver-fuzz" / "venv"
SCHEMATHESIS = "schemathesis>=4.3,<5"


def ensure_schemathesis() -> Path:
    exe = VENV / "bin" / "schemathesis"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = str(VENV / "bin" / "pip")
        subprocess.run([pip, "install", "--quiet", SCHEMATHESIS], check=True)
    return exe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def post(url: str, body: dict[str, object], token: str | None = None) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, object] = json.load(response)
        return result


def write_config(data_dir: Path, port: int) -> Path:
    config = data_dir / "trioserver.toml"
    config.write_text(
        f"""server_name = "localhost"
data_dir = "."
[http]
bind_addresses = ["127.0.0.1"]
port = {port}
[registration]
enabled = true
bcrypt_rounds = 4
shared_secret = "fuzz"
[ratelimit]
enabled = false
[database]
synchronous = "normal"
"""
    )
    return config


def wait_until_up(base: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if server.poll() is not None:
            raise SystemExit("trioserver exited during start-up")
        try:
            urllib.request.urlopen(base + "/_matrix/client/versions", timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("trioserver did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--max-time", type=int, default=600, help="schemathesis time budget (s)")
    parser.add_argument(
        "--server-workers",
        type=int,
        default=0,
        help="run the server as `trioserver run --workers N` (every request through a worker)",
    )
    parser.add_argument("extra", nargs="*", help="more schemathesis arguments (after --)")
    args = parser.parse_args()
    schemathesis = ensure_schemathesis()
    trioserver = shutil.which("trioserver", path=str(Path(sys.executable).parent))
    if trioserver is None:
        raise SystemExit("trioserver is not installed in this Python's environment")
    with tempfile.TemporaryDirectory(prefix="trioserver-fuzz-") as tmp:
        data_dir, port = Path(tmp), free_port()
        config = write_config(data_dir, port)
        log_path = data_dir / "server.log"
        with log_path.open("wb") as log:
            pool = ["--workers", str(args.server_workers)] if args.server_workers else []
            server = subprocess.Popen(
                [trioserver, "run", "--config", str(config), *pool], stdout=log, stderr=log
            )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(base, server)
            client = base + "/_matrix/client/v3"
            if args.server_workers:
                # A worker answers /versions before its replication link to main is up, and a
                # write it forwards before that is refused (503): wait for the link.
                time.sleep(3)
            user = post(
                client + "/register",
                {"username": "fuzz", "password": "fuzzpw", "auth": {"type": "m.login.dummy"}},
            )
            token = str(user["access_token"])
            room = post(client + "/createRoom", {"preset": "public_chat"}, token)
            settings = data_dir / "schemathesis.toml"
            settings.write_text(
                f'headers = {{ Authorization = "Bearer {token}" }}\n'
                "[parameters]\n"
                f'"path.roomId" = "{room["room_id"]}"\n'
                f'"path.roomIdOrAlias" = "{room["room_id"]}"\n'
                f'"path.userId" = "{user["user_id"]}"\n'
            )
            command = [
                str(schemathesis), "--config-file", str(settings), "run", str(args.spec),
                "--url", base, "--checks", "not_a_server_error",
                "--max-time", str(args.max_time), "--suppress-health-check", "all",
                "--exclude-path-regex", "/(logout(/all)?|account/deactivate)$",
                # Long-polls (/sync, /events) wait up to 30 s by default, as in the spec.
                "--request-timeout", "40", "--workers", "2", *args.extra,
            ]  # fmt: skip
            status = subprocess.run(command, env={**os.environ, "NO_COLOR": "1"}).returncode
        finally:
            server.terminate()
            server.wait(timeout=30)
        if server.returncode not in (0, -15):
            print(f"trioserver exited with status {server.returncode}")
            status = status or 1
        if status != 0:
            print("---- server log ----")
            print(log_path.read_text(errors="replace")[-20000:])
        return status


if __name__ == "__main__":
    raise SystemExit(main())
