"""`trioserver run` that cannot start says why in one line and exits 1 (issue 10).

Each case runs a real `trioserver` process, as a newcomer would meet it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import trio

from tests.integration.test_cli import free_port, run_cli


def assert_one_error(result: subprocess.CompletedProcess[bytes], *fragments: str) -> str:
    """The process exited 1 with exactly one ``error:`` line holding every fragment."""
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


async def generated_data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    generated = await run_cli(
        "generate-config", "--data-dir", data_dir, "--server-name", "localhost", cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    return data_dir


def edit_config(data_dir: Path, old: str, new: str) -> None:
    path = data_dir / "trioserver.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


async def test_port_in_use(tmp_path: Path) -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_cli(
            "run", "--data-dir", tmp_path / "d", "--port", str(port), cwd=tmp_path
        )
    assert_one_error(
        result,
        f"cannot listen on 127.0.0.1:{port}",
        "(http.port / http.bind_addresses)",
        "address already in use",
    )


async def test_port_over_65535_on_the_command_line(tmp_path: Path) -> None:
    result = await run_cli("run", "--data-dir", tmp_path / "d", "--port", "70000", cwd=tmp_path)
    assert_one_error(result, "--port 70000", "http.port", "65535")


async def test_address_of_another_machine(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this machine.
    result = await run_cli(
        "run", "--data-dir", tmp_path / "d", "--bind", "192.0.2.1", "--port", str(free_port()),
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_error(
        result, "cannot listen on 192.0.2.1:", "http.bind_addresses", "not an address"
    )


async def test_data_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    result = await run_cli(
        "run", "--data-dir", "afile/sub", "--port", str(free_port()), cwd=tmp_path
    )
    assert_one_error(result, "afile/sub/trioserver.toml", "--data-dir", "not a directory")


async def test_configured_data_dir_cannot_be_created(tmp_path: Path) -> None:
    data_dir = await generated_data_dir(tmp_path)
    (data_dir / "afile").write_text("")
    edit_config(data_dir, 'data_dir = "."', 'data_dir = "afile/sub"')
    result = await run_cli("run", "--data-dir", data_dir, "--port", str(free_port()), cwd=tmp_path)
    assert_one_error(result, "data directory", "afile/sub", "(data_dir)", "not a directory")


async def test_database_path_is_a_directory(tmp_path: Path) -> None:
    data_dir = await generated_data_dir(tmp_path)
    (data_dir / "dbdir").mkdir()
    edit_config(data_dir, 'path = "homeserver.db"', 'path = "dbdir"')
    result = await run_cli("run", "--data-dir", data_dir, "--port", str(free_port()), cwd=tmp_path)
    assert_one_error(result, "cannot open the database", "dbdir", "(database.path)")


async def test_database_file_is_not_a_database(tmp_path: Path) -> None:
    data_dir = await generated_data_dir(tmp_path)
    (data_dir / "junk.db").write_bytes(b"this is not SQLite\n" * 300)
    edit_config(data_dir, 'path = "homeserver.db"', 'path = "junk.db"')
    result = await run_cli("run", "--data-dir", data_dir, "--port", str(free_port()), cwd=tmp_path)
    assert_one_error(result, "junk.db", "(database.path)", "not a database")


async def test_missing_tls_certificate(tmp_path: Path) -> None:
    data_dir = await generated_data_dir(tmp_path)
    edit_config(
        data_dir,
        '# tls_certificate_path = "/path/to/fullchain.pem"\n'
        '# tls_private_key_path = "/path/to/privkey.pem"',
        'tls_certificate_path = "nope.pem"\ntls_private_key_path = "nope.key"',
    )
    result = await run_cli("run", "--data-dir", data_dir, "--port", str(free_port()), cwd=tmp_path)
    assert_one_error(result, "nope.pem", "http.tls_certificate_path")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'bind_addresses = ["127.0.0.1"]',
            'bind_addresses = "127.0.0.1"',
            'config.http.bind_addresses: expected an array, e.g. ["..."], got a string',
        ),
        (
            'default_room_version = "12"',
            'default_room_version = "99"',
            "config.rooms.default_room_version: '99' is not a room version",
        ),
        (
            'synchronous = "full"',
            'synchronous = "fast"',
            'config.database.synchronous: must be one of "full", "normal", got "fast"',
        ),
        (
            'backend = "sqlite"',
            'backend = "x"',
            'config.database.backend: must be one of "sqlite", "postgres", got "x"',
        ),
        (
            '# log_level = "INFO"',
            'log_level = "LOUD"',
            'config.log_level: must be one of "DEBUG", "INFO", "WARNING", "ERROR", got "LOUD"',
        ),
        ("port = 8008", "port = 70000", "config.http.port: must be between 1 and 65535"),
        ("port = 8008", "port = -1", "config.http.port: must be between 1 and 65535"),
        ("port = 8008", 'port = "8008"', "config.http.port: expected an integer, got a string"),
        ("port = 8008", "port = 8008\nprot = 1", "config.http: unknown key prot"),
    ],
)
async def test_bad_config_value_names_the_key(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    data_dir = await generated_data_dir(tmp_path)
    edit_config(data_dir, old, new)
    result = await run_cli("run", "--data-dir", data_dir, "--port", str(free_port()), cwd=tmp_path)
    line = assert_one_error(result, expected)
    assert "unknown error" not in line


async def test_config_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    result = await run_cli("run", "--config", tmp_path / "conf", cwd=tmp_path)
    assert_one_error(result, "cannot read config file", "conf", "directory")
