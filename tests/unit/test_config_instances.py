"""The deployment keys of the config (issue 13): instances, writers, roles, replication."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trioserver.config import Config, config_from_mapping
from trioserver.errors import ConfigError

DEPLOYMENT: dict[str, Any] = {
    "replication": {"port": 9093, "secret": "s3cret"},
    "instance_map": {"main": {"host": "127.0.0.1", "port": 9100}},
    "workers": {"worker1": {"port": 8009}, "worker2": {"port": 8010, "bind_addresses": ["::1"]}},
}


def load(raw: dict[str, Any]) -> Config:
    return config_from_mapping(raw, base_dir=Path("/tmp"))


def test_a_single_instance_needs_no_deployment_keys() -> None:
    config = load({})
    assert config.is_main
    assert not config.is_multi_instance
    assert config.is_events_writer
    assert all(config.writes(s) for s in ("events", "typing", "caches"))
    assert config.runs_role("pushers")
    assert config.runs_role("expiry")


def test_one_file_describes_every_instance() -> None:
    deployment = load(DEPLOYMENT)
    assert deployment.is_multi_instance
    worker = deployment.for_instance("worker2")
    assert worker.instance_name == "worker2"
    assert worker.http.port == 8010
    assert worker.http.bind_addresses == ("::1",)
    assert not worker.is_main
    assert not worker.is_events_writer
    assert not worker.writes("receipts")
    assert not worker.runs_role("pushers")
    assert not worker.runs_role("expiry")
    # Without its own bind addresses a worker takes [http]'s.
    assert deployment.for_instance("worker1").http.bind_addresses == ("127.0.0.1",)
    assert deployment.for_instance("main").http == deployment.http


def test_an_unknown_instance_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"--instance 'nope': no \[workers.nope\] section"):
        load(DEPLOYMENT).for_instance("nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"replication": {"secret": None}}, r"config\.replication\.secret: required"),
        ({"instance_map": {}}, r"config\.instance_map\.main: needed"),
        ({"stream_writers": {"typing": "worker1"}}, r"stream_writers\.typing: instance"),
        ({"roles": {"pushers": "worker1"}}, r"roles\.pushers: must be 'main'"),
        ({"roles": {"media_expiry": "nope"}}, r"roles\.media_expiry: instance 'nope'"),
        ({"workers": {"main": {"port": 1}}}, r"config\.workers\.main: a worker name"),
        ({"workers": {"a b": {"port": 1}}}, r"config\.workers\.a b: a worker name"),
        ({"replication": {"port": 70000}}, r"config\.replication\.port: must be between"),
    ],
)
def test_inconsistent_deployments_are_refused(change: dict[str, Any], message: str) -> None:
    raw = {**DEPLOYMENT, **{k: {**DEPLOYMENT.get(k, {}), **v} for k, v in change.items()}}
    if change.get("instance_map") == {}:
        raw["instance_map"] = {}
    with pytest.raises(ConfigError, match=message):
        load(raw)


@pytest.mark.parametrize("stream", ["typing", "receipts", "device_lists"])
def test_only_main_writes_the_streams_but_events(stream: str) -> None:
    raw = {
        **DEPLOYMENT,
        "instance_map": {**DEPLOYMENT["instance_map"], "worker1": {"host": "h", "port": 1}},
    }
    with pytest.raises(ConfigError, match=rf"stream_writers\.{stream}: only 'main' can write"):
        load({**raw, "stream_writers": {stream: "worker1"}})


WORKER1_WRITES_EVENTS: dict[str, Any] = {
    **DEPLOYMENT,
    "instance_map": {
        **DEPLOYMENT["instance_map"],
        "worker1": {"host": "127.0.0.1", "port": 9101, "replication_port": 9094},
    },
    "stream_writers": {"events": "worker1"},
}


def test_a_worker_can_write_events() -> None:
    deployment = load(WORKER1_WRITES_EVENTS)
    assert not deployment.events_writer_is_main
    assert not deployment.is_events_writer  # main
    assert deployment.writes("typing")
    assert deployment.runs_role("pushers")
    writer = deployment.for_instance("worker1")
    assert writer.is_events_writer
    assert writer.writes("events")
    assert not writer.writes("receipts")
    assert writer.runs_role("expiry")
    assert not writer.runs_role("pushers")
    assert not deployment.for_instance("worker2").runs_role("expiry")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"instance_map": {"worker1": {"host": "h", "port": 9101}}},
            r"instance_map\.worker1\.replication_port: needed for the events writer",
        ),
        ({"stream_writers": {"events": "nope"}}, r"stream_writers\.events: instance 'nope'"),
        (
            {"instance_map": {"worker1": {"host": "h", "port": 1, "replication_port": 70000}}},
            r"instance_map\.worker1\.replication_port: must be between",
        ),
    ],
)
def test_an_events_writer_elsewhere_needs_its_listener(
    change: dict[str, Any], message: str
) -> None:
    raw = dict(WORKER1_WRITES_EVENTS)
    for key, value in change.items():
        raw[key] = {**WORKER1_WRITES_EVENTS.get(key, {}), **value}
    with pytest.raises(ConfigError, match=message):
        load(raw)
