"""`run --workers N` completes the config in memory (trioserver.pool.plan_pool) and binds each
worker its client sockets."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any

import pytest

from trioserver import pool
from trioserver.config import HttpConfig, config_from_mapping, merge_config
from trioserver.errors import ConfigError
from trioserver.pool import (
    INITIAL_BACKOFF_S,
    MAX_BACKOFF_S,
    RESET_BACKOFF_AFTER_S,
    PoolChild,
    _can_bind_loopback,
    bind_client_sockets,
    free_loopback_port,
    next_restart_delay,
    plan_pool,
    worker_names,
)

FILE: dict[str, Any] = {"server_name": "example.org", "http": {"port": 8008}}


def planned(raw: dict[str, Any], workers: int) -> dict[str, Any]:
    ports = itertools.count(20000)
    return plan_pool(raw, workers, pick_port=lambda: next(ports), make_secret=lambda: "s3cret")


def test_a_bare_file_gets_workers_ports_and_a_secret() -> None:
    overlay = planned(FILE, 2)
    assert overlay == {
        "replication": {"port": 20000, "secret": "s3cret"},
        "instance_map": {
            "main": {"host": "127.0.0.1", "port": 20001},
            "worker1": {"host": "127.0.0.1", "port": 20002},
            "worker2": {"host": "127.0.0.1", "port": 20003},
        },
        "workers": {"worker1": {"port": 0}, "worker2": {"port": 0}},
    }


def test_what_the_file_says_is_kept() -> None:
    raw = {
        **FILE,
        "replication": {"bind": "127.0.0.2", "port": 9999, "secret": "mine"},
        "instance_map": {"main": {"host": "10.0.0.1", "port": 7000}},
        "workers": {"worker1": {"port": 0, "bind_addresses": ["::1"]}},
    }
    overlay = planned(raw, 1)
    assert overlay["replication"] == {"bind": "127.0.0.2", "port": 9999, "secret": "mine"}
    assert overlay["instance_map"]["main"] == {"host": "10.0.0.1", "port": 7000}
    assert overlay["instance_map"]["worker1"] == {"host": "127.0.0.1", "port": 20000}
    assert overlay["workers"] == {"worker1": {"port": 0, "bind_addresses": ["::1"]}}


@pytest.mark.parametrize("instance", ["main", "worker1", "worker2", "worker3"])
def test_the_completed_config_is_valid_for_every_instance(instance: str) -> None:
    merged = merge_config(FILE, planned(FILE, 3))
    config = config_from_mapping(merged, base_dir=Path("/srv")).for_instance(instance)
    assert config.instance_name == instance
    assert config.is_multi_instance
    assert config.replication.secret == "s3cret"
    assert config.instance_map["main"].port == 20001
    # The file's own tables are untouched by the overlay.
    assert config.http.bind_addresses == ("127.0.0.1",)


def test_a_worker_outside_the_pool_is_a_config_error() -> None:
    config = config_from_mapping(merge_config(FILE, planned(FILE, 2)), base_dir=Path("/srv"))
    with pytest.raises(ConfigError, match=r"--instance 'worker3': no \[workers.worker3\]"):
        config.for_instance("worker3")


def test_merge_config_merges_tables_and_replaces_values() -> None:
    raw = {"http": {"port": 1, "bind_addresses": ["a"]}, "log_level": "INFO"}
    overlay = {"http": {"port": 2}, "log_level": "DEBUG", "workers": {"w": {}}}
    assert merge_config(raw, overlay) == {
        "http": {"port": 2, "bind_addresses": ["a"]},
        "log_level": "DEBUG",
        "workers": {"w": {}},
    }
    assert raw["http"] == {"port": 1, "bind_addresses": ["a"]}  # not modified in place


def test_the_child_environment_round_trips() -> None:
    child = PoolChild("worker2", {"replication": {"secret": "x"}}, (3, 4), parent_fd=5)
    assert PoolChild.from_env(child.to_env()) == child


def test_worker_names() -> None:
    assert worker_names(3) == ("worker1", "worker2", "worker3")


def test_restart_delay_doubles_to_30_s_and_resets_after_a_minute_up() -> None:
    delays = [next_restart_delay(None, up_for_s=0)]
    for _ in range(6):
        delays.append(next_restart_delay(delays[-1], up_for_s=0.5))
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    healthy = next_restart_delay(MAX_BACKOFF_S, up_for_s=RESET_BACKOFF_AFTER_S)
    assert healthy == INITIAL_BACKOFF_S


def test_picked_ports_are_below_the_ephemeral_range_bindable_and_distinct() -> None:
    # Outgoing connections take their local ports from the ephemeral range; a port planned
    # for a listener there can be taken before the listener binds it (seen in CI).
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    picked = [free_loopback_port() for _ in range(200)]
    assert len(set(picked)) == len(picked)
    assert all(1024 <= port < low for port in picked)
    for port in picked[:20]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))
            listener.listen()


def test_a_port_in_use_is_not_picked() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        assert not _can_bind_loopback(busy)


def test_each_worker_gets_its_own_sockets_on_the_one_port() -> None:
    groups = bind_client_sockets(HttpConfig(bind_addresses=("127.0.0.1",), port=0), 3)
    try:
        sockets = [group[0] for group in groups]
        assert len({sock.fileno() for sock in sockets}) == 3
        assert len({sock.getsockname() for sock in sockets}) == 1
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for sock in sockets)
    finally:
        for group in groups:
            for sock in group:
                sock.close()


def test_where_the_kernel_does_not_spread_connections_workers_share_one_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pool, "SOCKETS_PER_WORKER", False)
    groups = bind_client_sockets(HttpConfig(bind_addresses=("127.0.0.1",), port=0), 3)
    try:
        assert all(group is groups[0] for group in groups)
        assert not groups[0][0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    finally:
        for sock in groups[0]:
            sock.close()
