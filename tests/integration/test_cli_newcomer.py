"""What a newcomer meets on first start: file modes, hints, --version (issue 10)."""

from __future__ import annotations

import importlib.metadata
import stat
from pathlib import Path

from tests.integration.test_cli import run_cli, server_process, use_cheap_bcrypt

FIRST_USER_HINT = "Create the first user with"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_config_holding_the_shared_secret_is_owner_only(tmp_path: Path) -> None:
    generated = await run_cli(
        "generate-config", "--data-dir", tmp_path / "gen", "--server-name", "localhost",
        cwd=tmp_path,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    assert mode(tmp_path / "gen" / "trioserver.toml") == 0o600
    assert mode(tmp_path / "gen" / "signing.key") == 0o600

    async with server_process("--data-dir", tmp_path / "run", cwd=tmp_path) as server:
        assert await server.stop() == 0, server.output()
    assert mode(tmp_path / "run" / "trioserver.toml") == 0o600


async def test_first_user_hint_only_while_there_are_no_users(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        await server.wait_for_output("trioserver is running")
        assert await server.stop() == 0, server.output()
    assert FIRST_USER_HINT in server.output()
    assert f"--config {data_dir / 'trioserver.toml'}" in server.output()

    use_cheap_bcrypt(data_dir)
    created = await run_cli(
        "register-user", "--config", data_dir / "trioserver.toml", "--user", "alice",
        "--password", "pw", cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        await server.wait_for_output("trioserver is running")
        assert await server.stop() == 0, server.output()
    assert FIRST_USER_HINT not in server.output()


async def test_version(tmp_path: Path) -> None:
    result = await run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    version = importlib.metadata.version("trioserver")
    assert result.stdout.decode().strip() == f"trioserver {version}"
