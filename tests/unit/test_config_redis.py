"""``[replication] redis`` (issue 14): replication over Redis pub/sub instead of TCP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trioserver.config import Config, config_from_mapping
from trioserver.errors import ConfigError

REDIS_DEPLOYMENT: dict[str, Any] = {
    "replication": {"secret": "s3cret", "redis": "redis://:pw@10.0.0.5:6379/1"},
    "instance_map": {
        "main": {"host": "10.0.0.1", "port": 9100},
        # The events writer needs no replication_port: nobody connects to it over TCP.
        "worker1": {"host": "10.0.0.2", "port": 9101},
    },
    "workers": {"worker1": {"port": 8009}, "worker2": {"port": 8010}},
    "stream_writers": {"events": "worker1"},
}


def load(raw: dict[str, Any]) -> Config:
    return config_from_mapping(raw, base_dir=Path("/tmp"))


def with_replication(**keys: Any) -> dict[str, Any]:
    return {**REDIS_DEPLOYMENT, "replication": {**REDIS_DEPLOYMENT["replication"], **keys}}


def test_one_file_with_redis_describes_every_instance() -> None:
    deployment = load(REDIS_DEPLOYMENT)
    assert deployment.replication.redis == "redis://:pw@10.0.0.5:6379/1"
    assert deployment.replication.redis_channel_prefix == "trioserver"
    assert deployment.for_instance("worker1").is_events_writer
    assert load(with_replication(redis_channel_prefix="prod-1")).replication.redis_channel_prefix


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"redis": "rediss://h"}, r"config\.replication\.redis: rediss:// \(TLS\) is not"),
        ({"redis": "127.0.0.1:6379"}, r"config\.replication\.redis: must start with redis://"),
        ({"redis": "redis://h/x"}, r"config\.replication\.redis: the database must be a num"),
        ({"redis": 6379}, r"config\.replication\.redis: expected a string"),
        ({"redis_channel_prefix": ""}, r"config\.replication\.redis_channel_prefix: must be"),
        ({"redis_channel_prefix": "a b"}, r"config\.replication\.redis_channel_prefix: must"),
    ],
)
def test_bad_redis_keys_are_refused_by_name(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(with_replication(**keys))


def test_a_bad_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        load(with_replication(redis="redis://:hunter2@h:1/nope"))
    assert "hunter2" not in str(info.value)


def test_redis_does_not_replace_the_secret() -> None:
    # The secret still authenticates the internal HTTP endpoints (forwarded writes).
    with pytest.raises(ConfigError, match=r"config\.replication\.secret: required"):
        load(with_replication(secret=None))


def test_without_redis_the_events_writer_still_needs_its_listener() -> None:
    with pytest.raises(ConfigError, match=r"worker1\.replication_port: needed"):
        load(with_replication(redis=None))
