"""Configuration: frozen attrs classes built by cattrs from TOML.

Every key has a default, unknown keys are errors, and types are checked strictly (a string is
never turned into a number). All problems in a file are reported together, each with its key
path, in one `ConfigError`.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import attrs
import cattrs
import cattrs.v
from cattrs.preconf.tomllib import make_converter

from trioserver.errors import ConfigError

# Synapse's default ip_range_blacklist, for [push] and [media] URL previews (see
# trioserver/guarded_http.py), and the ranges that reach those through another address:
# "this network", reserved and broadcast IPv4, NAT64 (64:ff9b::/96 and /48 map IPv4
# addresses), IPv4-compatible IPv6 (::/96), 6to4 (2002::/16) and the discard prefix.
DEFAULT_PUSH_BLOCKLIST = (
    "0.0.0.0/8",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "::/96",
    "2002::/16",
    "100::/64",
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
)


@attrs.frozen
class HttpConfig:
    """The client-facing HTTP listener."""

    bind_addresses: tuple[str, ...] = ("127.0.0.1",)
    port: int = 8008
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None
    # The URL clients should use; advertised in /.well-known/matrix/client. When unset, the
    # scheme and Host of the request are used, which is right for a server on loopback.
    public_baseurl: str | None = None
    # JSON request bodies above this are refused with 413 M_TOO_LARGE.
    max_request_body_size: int = 1024 * 1024
    # Seconds that in-flight requests get to finish after SIGINT/SIGTERM.
    graceful_shutdown_seconds: float = 10.0
    # One INFO line per request on the `trioserver.access` logger (off: no per-request cost).
    log_access: bool = False


@attrs.frozen
class DatabaseConfig:
    """Where and how the database is kept."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    # SQLite: the database file (relative to the data dir).
    path: str = "homeserver.db"
    # SQLite `synchronous` for the writer connection. FULL survives power loss; NORMAL only
    # survives a process crash (see BENCHMARKS.md for what each costs).
    synchronous: Literal["full", "normal"] = "full"
    reader_connections: int = 4
    # PostgreSQL: a libpq connection string or URL (postgresql://user@host:5432/dbname), and
    # the size of each instance's pool of reader connections (one more connection writes).
    dsn: str | None = None
    min_connections: int = 1
    max_connections: int = 10
    # How long a request waits for a connection (or a new one to open) before it fails
    # with 503 M_UNKNOWN: a database that is down must not hang requests.
    connect_timeout_seconds: float = 10.0


@attrs.frozen
class RegistrationConfig:
    """Account creation."""

    enabled: bool = False
    shared_secret: str | None = None
    bcrypt_rounds: int = 12
    # Spec "Guest Access": POST /register?kind=guest; off means 403 M_GUEST_ACCESS_FORBIDDEN.
    allow_guest_access: bool = False


@attrs.frozen
class RateLimit:
    """A token bucket: `burst_count` actions at once, refilled at `per_second`."""

    per_second: float
    burst_count: float


@attrs.frozen
class RatelimitConfig:
    """Per-action rate limits (Synapse's defaults)."""

    enabled: bool = True
    message: RateLimit = RateLimit(per_second=0.2, burst_count=10)
    login: RateLimit = RateLimit(per_second=0.003, burst_count=5)
    registration: RateLimit = RateLimit(per_second=0.17, burst_count=3)
    # Uploads per user (POST /upload, POST /create and PUT /upload), counted per request.
    # Synapse's rc_media_create: Element sends an image and its thumbnail as two uploads, so a
    # handful of photos at once must pass.
    media_upload: RateLimit = RateLimit(per_second=10.0, burst_count=50)


@attrs.frozen
class RoomsConfig:
    """Room creation defaults."""

    default_room_version: str = "12"


@attrs.frozen
class VoipConfig:
    """TURN servers offered to VoIP clients (``GET /voip/turnServer``); none by default."""

    turn_uris: tuple[str, ...] = ()
    # With a shared secret (coturn's `static-auth-secret`), each user gets credentials that
    # expire after turn_user_lifetime; otherwise turn_username/turn_password are handed out.
    turn_shared_secret: str | None = None
    turn_username: str | None = None
    turn_password: str | None = None
    # Seconds the credentials are valid (Synapse's default: one day).
    turn_user_lifetime: int = 86_400
    turn_allow_guests: bool = True


# The instance that runs the replication listener and, unless configured otherwise, writes
# every stream (Synapse's "main process").
MAIN_INSTANCE = "main"


@attrs.frozen
class StreamWritersConfig:
    """Which instance writes each stream (seed 2: only the events writer persists events).

    Issue 13: main writes every stream but ``events``, which may be written by a worker
    instance of the deployment (config validation refuses another writer for the rest);
    workers forward their writes to main, and main hands the events it sends to the events
    writer (`trioserver.internal.remote_events`).
    """

    events: str = MAIN_INSTANCE
    typing: str = MAIN_INSTANCE
    receipts: str = MAIN_INSTANCE
    account_data: str = MAIN_INSTANCE
    presence: str = MAIN_INSTANCE
    to_device: str = MAIN_INSTANCE
    device_lists: str = MAIN_INSTANCE

    def writer_of(self, stream: str) -> str:
        """The instance that writes `stream` (``caches`` is always main's)."""
        value = getattr(self, stream, MAIN_INSTANCE)
        assert isinstance(value, str)
        return value


@attrs.frozen
class InstanceLocation:
    """Where an instance's internal HTTP listener (``/_trioserver/replication/...``) is.

    `replication_port`: the replication listener of an events writer that is not main (its
    events stream; main's streams are on ``[replication] port``), on the same host; not used
    with ``[replication] redis``.
    """

    host: str
    port: int
    replication_port: int | None = None


@attrs.frozen
class ReplicationConfig:
    """Main's replication listener, which every other instance connects to (issue 13).

    `secret` authenticates the replication connection and the internal HTTP endpoints; an
    instance refuses to run in a multi-instance deployment without it.

    `redis` (``redis://[[user]:password@]host[:port][/db]``, issue 14): every instance
    replicates over that Redis's pub/sub instead, on channels under `redis_channel_prefix`
    (`trioserver.repl.redis_channels`), and no replication listener runs (`bind`, `port` and
    ``instance_map.NAME.replication_port`` are not used).
    """

    bind: str = "127.0.0.1"
    port: int = 9093
    secret: str | None = None
    redis: str | None = None
    redis_channel_prefix: str = "trioserver"


@attrs.frozen
class WorkerConfig:
    """A named worker instance of a deployment described in one file (issue 13).

    Attributes:
        port: its client API port (``http.port`` of that instance).
        bind_addresses: its client API addresses (default: ``http.bind_addresses``).
    """

    port: int = 0
    bind_addresses: tuple[str, ...] | None = None


@attrs.frozen
class RolesConfig:
    """Background roles that run on exactly one instance (issue 13).

    Event expiry (seed 7) always runs on the events writer and is not listed here.
    """

    pushers: str = MAIN_INSTANCE
    media_expiry: str = MAIN_INSTANCE
    # Sends events and EDUs to other servers (issue 15).
    federation_sender: str = MAIN_INSTANCE


@attrs.frozen
class PushConfig:
    """Delivery of notifications to push gateways (spec "Push Notifications")."""

    # Off: pushers can still be set and listed, but nothing is delivered.
    enabled: bool = True
    # Off: notifications carry no event content (the sender and room name still go), as
    # Synapse's `push.include_content`.
    include_content: bool = True
    # Seconds one request to a push gateway may take before it counts as failed.
    timeout: float = 10.0
    # The badge (`counts.unread`) counts rooms with unread notifications; off: notifications.
    group_unread_count_by_room: bool = True
    # A failed delivery is retried after `initial_backoff` seconds, doubling up to
    # `max_backoff`; a notification failing for `give_up_after` seconds is dropped.
    initial_backoff: float = 1.0
    max_backoff: float = 3600.0
    give_up_after: float = 86400.0
    # Addresses pushers may not connect to (Synapse's `ip_range_blacklist`; its default: loopback,
    # private and other special ranges), and exceptions to that (e.g. a local Sygnal).
    ip_range_blocklist: tuple[str, ...] = DEFAULT_PUSH_BLOCKLIST
    ip_range_allowlist: tuple[str, ...] = ()
    # Off only for tests against gateways with self-signed certificates (SyTest).
    verify_tls: bool = True


@attrs.frozen
class ThumbnailSize:
    """One thumbnail size made for every uploaded image (Synapse's `thumbnail_sizes`)."""

    width: int
    height: int
    method: Literal["crop", "scale"]


# Synapse's default `thumbnail_sizes`.
DEFAULT_THUMBNAIL_SIZES = (
    ThumbnailSize(32, 32, "crop"),
    ThumbnailSize(96, 96, "crop"),
    ThumbnailSize(320, 240, "scale"),
    ThumbnailSize(640, 480, "scale"),
    ThumbnailSize(800, 600, "scale"),
)


@attrs.frozen
class MediaConfig:
    """The media repository (spec "Content repository")."""

    # Where files are kept, relative to `data_dir` (sharded directories below it).
    storage_path: str = "media"
    # Larger uploads are refused with 413 M_TOO_LARGE (checked before and while reading).
    max_upload_size: int = 50 * 1024 * 1024
    # Images with more pixels than this are stored but never decoded (decompression bombs).
    max_image_pixels: int = 32_000_000
    thumbnail_sizes: tuple[ThumbnailSize, ...] = DEFAULT_THUMBNAIL_SIZES
    # On: a thumbnail request of any size is made on demand (and cached). Off (Synapse's
    # default): the nearest configured size is served.
    dynamic_thumbnails: bool = False
    # Media uploaded before this time (ms since the epoch) is also served by the legacy
    # unauthenticated /_matrix/media/v3/download and /thumbnail (spec v1.11 freeze); 0: none.
    unauthenticated_media_before_ts: int = 0
    # POST /create: ids a user may hold without content, and seconds before an unused id
    # expires (Synapse's max_pending_media_uploads and unused_expiration_time).
    max_pending_uploads: int = 5
    unused_expiration_time: float = 86_400.0
    # URL previews (GET /preview_url) fetch any URL a user names, so they are off by default.
    url_preview_enabled: bool = False
    # Addresses a preview may never reach, checked after DNS on every redirect hop (Synapse's
    # url_preview_ip_range_blacklist), and exceptions to that.
    url_preview_ip_range_blocklist: tuple[str, ...] = DEFAULT_PUSH_BLOCKLIST
    url_preview_ip_range_allowlist: tuple[str, ...] = ()
    # Bytes of a page read at most (Synapse's max_spider_size), seconds per fetch, redirects.
    url_preview_max_size: int = 10 * 1024 * 1024
    url_preview_timeout: float = 10.0
    url_preview_max_redirects: int = 5
    url_preview_accept_language: tuple[str, ...] = ("en",)
    # Off only for tests whose pages are served with a certificate of their own CA (SyTest's
    # 51media, as Synapse's SyTest config turns off its client's TLS checks); like [push]
    # verify_tls. The IP-range checks apply either way.
    url_preview_verify_tls: bool = True


@attrs.frozen
class FederationConfig:
    """The Server-Server API (issue 15): talking to other homeservers.

    The federation endpoints are served on the client listener (one TLS port serving both
    APIs, as SyTest runs servers); other servers reach it by discovery: the server name's
    ``/.well-known/matrix/server``, then SRV records, then port 8448.
    """

    enabled: bool = True
    # Serve /.well-known/matrix/server, delegating to `public_baseurl`'s host and port (the
    # TLS listener other servers should use), when this server is reached under another name.
    serve_well_known: bool = False
    public_baseurl: str | None = None
    # Only these servers may federate with this one (None: any server).
    domain_whitelist: tuple[str, ...] | None = None
    # Addresses outbound federation may never connect to, checked after DNS (a room's members
    # choose which servers this one talks to), and exceptions (tests on loopback).
    ip_range_blocklist: tuple[str, ...] = DEFAULT_PUSH_BLOCKLIST
    ip_range_allowlist: tuple[str, ...] = ()
    # Notary servers asked for a server's keys when it does not answer itself (none by
    # default: nothing leaves the machine unless configured).
    trusted_key_servers: tuple[str, ...] = ()
    # Extra CA certificates (PEM) trusted for outbound federation, besides the system's
    # (a test CA); verify_tls off only for tests against self-signed servers.
    ca_file: str | None = None
    verify_tls: bool = True
    # Seconds one outbound request may take.
    request_timeout: float = 60.0
    # A listener of its own for the Server-Server API (TLS, as other servers require), e.g.
    # port 8448 while clients use a plain-HTTP port behind a reverse proxy; None: federation
    # is served on the client listener only.
    port: int | None = None
    bind_addresses: tuple[str, ...] = ("0.0.0.0",)
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None

    def listener(self, client: HttpConfig) -> HttpConfig | None:
        """The federation listener as an HTTP listener config (None when there is none)."""
        if self.port is None:
            return None
        return attrs.evolve(
            client,
            port=self.port,
            bind_addresses=self.bind_addresses,
            tls_certificate_path=self.tls_certificate_path,
            tls_private_key_path=self.tls_private_key_path,
            log_access=client.log_access,
        )


@attrs.frozen
class Config:
    """The whole configuration of one server instance."""

    server_name: str = "localhost"
    # Relative to the config file; absolute after `load_config`.
    data_dir: str = "."
    signing_key_path: str = "signing.key"
    enable_ephemeral_messages: bool = False
    instance_name: str = "main"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    http: HttpConfig = HttpConfig()
    database: DatabaseConfig = DatabaseConfig()
    registration: RegistrationConfig = RegistrationConfig()
    ratelimit: RatelimitConfig = RatelimitConfig()
    rooms: RoomsConfig = RoomsConfig()
    voip: VoipConfig = VoipConfig()
    stream_writers: StreamWritersConfig = StreamWritersConfig()
    instance_map: Mapping[str, InstanceLocation] = attrs.field(factory=dict)
    replication: ReplicationConfig = ReplicationConfig()
    workers: Mapping[str, WorkerConfig] = attrs.field(factory=dict)
    roles: RolesConfig = RolesConfig()
    push: PushConfig = PushConfig()
    media: MediaConfig = MediaConfig()
    federation: FederationConfig = FederationConfig()

    def data_path(self, relative: str) -> Path:
        """A path from the config, resolved against `data_dir`."""
        return Path(self.data_dir) / relative

    @property
    def is_events_writer(self) -> bool:
        """Whether this instance persists events (seed 2: only the configured writer does)."""
        return self.stream_writers.events == self.instance_name

    @property
    def events_writer_is_main(self) -> bool:
        """Whether main persists events (else a worker instance does, issue 13)."""
        return self.stream_writers.events == MAIN_INSTANCE

    @property
    def is_main(self) -> bool:
        """Whether this instance runs the replication listener and main's streams."""
        return self.instance_name == MAIN_INSTANCE

    @property
    def is_multi_instance(self) -> bool:
        """Whether this deployment has more than one instance (replication is on)."""
        return bool(self.workers) or not self.is_main or len(self.instance_map) > 1

    def writes(self, stream: str) -> bool:
        """Whether this instance writes `stream`."""
        return self.stream_writers.writer_of(stream) == self.instance_name

    def runs_role(self, role: str) -> bool:
        """Whether this instance runs `role` (a field of `RolesConfig`, or ``expiry``)."""
        if role == "expiry":
            return self.is_events_writer
        value = getattr(self.roles, role)
        assert isinstance(value, str)
        return value == self.instance_name

    def for_instance(self, name: str) -> Config:
        """This deployment's config as instance `name` sees it (``--instance NAME``).

        A worker takes its client listener from its ``[workers.NAME]`` section.

        Raises:
            ConfigError: `name` is neither main nor a configured worker.
        """
        if name == MAIN_INSTANCE:
            return attrs.evolve(self, instance_name=name)
        worker = self.workers.get(name)
        if worker is None:
            known = ", ".join([MAIN_INSTANCE, *sorted(self.workers)])
            raise ConfigError(f"--instance {name!r}: no [workers.{name}] section ({known})")
        http = attrs.evolve(
            self.http,
            port=worker.port,
            bind_addresses=worker.bind_addresses or self.http.bind_addresses,
        )
        config = attrs.evolve(self, instance_name=name, http=http)
        _check_consistency(config)
        return config


T = TypeVar("T")


class _BadValue(ValueError):
    """A value of the wrong type or outside its choices; the message is shown as it is."""


def _type_name(value: Any) -> str:
    return {bool: "a boolean", str: "a string", list: "an array", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def _strict(expected: type[T], name: str) -> Callable[[Any, Any], T]:
    def structure(value: Any, _type: Any) -> T:
        # bool is an int subclass; `port = true` must not become port 1.
        if isinstance(value, bool) and expected is not bool:
            raise _BadValue(f"expected {name}, got a boolean")
        if not isinstance(value, expected):
            raise _BadValue(f"expected {name}, got {_type_name(value)}")
        return value

    return structure


def _structure_float(value: Any, _type: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadValue(f"expected a number, got {_type_name(value)}")
    return float(value)


def _is_literal(type_: Any) -> bool:
    origin: Any = get_origin(type_)
    return origin is Literal


def _structure_literal(value: Any, type_: Any) -> Any:
    choices = get_args(type_)
    # `value in choices` would let `true` match a choice of 1; compare types too.
    if not any(type(value) is type(c) and value == c for c in choices):
        listed = ", ".join(f'"{c}"' if isinstance(c, str) else repr(c) for c in choices)
        shown = f'"{value}"' if isinstance(value, str) else _type_name(value)
        raise _BadValue(f"must be one of {listed}, got {shown}")
    return value


def _array_of(base: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    # cattrs would turn any iterable into a tuple: a string became a tuple of characters
    # (`bind_addresses = "127.0.0.1"`). A TOML array is a list; require one.
    def structure(value: Any, type_: Any) -> T:
        if not isinstance(value, list):
            raise _BadValue(f'expected an array, e.g. ["..."], got {_type_name(value)}')
        return base(value, type_)

    return structure


def _is_exactly(expected: Any) -> Callable[[Any], bool]:
    # functools' dispatch takes only classes; generic aliases such as tuple[str, ...] need
    # a predicate.
    return lambda type_: bool(type_ == expected)


# Every sequence-typed field of the config (each must come from a TOML array).
_ARRAY_TYPES: tuple[Any, ...] = (tuple[str, ...],)


def _make_converter() -> cattrs.Converter:
    converter = make_converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict(int, "an integer"))
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(bool, _strict(bool, "a boolean"))
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook_func(_is_literal, _structure_literal)
    for array_type in _ARRAY_TYPES:
        base = converter.get_structure_hook(array_type)
        converter.register_structure_hook_func(_is_exactly(array_type), _array_of(base))
    return converter


def _format_exception(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, _BadValue):
        return str(exc)
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        keys = sorted(exc.extra_fields)
        return f"unknown key{'s' if len(keys) > 1 else ''} {', '.join(keys)}"
    return cattrs.v.format_exception(exc, type_)


_converter = _make_converter()


def _invalid(problems: list[str]) -> ConfigError:
    if len(problems) == 1:
        return ConfigError(f"invalid configuration: {problems[0]}")
    return ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def config_from_mapping(raw: Mapping[str, Any], *, base_dir: Path) -> Config:
    """Build and validate a `Config` from parsed TOML.

    Args:
        raw: the parsed TOML document.
        base_dir: the directory `data_dir` is relative to (the config file's directory).

    Raises:
        ConfigError: naming every bad key.
    """
    try:
        config = _converter.structure(dict(raw), Config)
    except Exception as exc:  # cattrs raises ClassValidationError / ForbiddenExtraKeysError
        messages = cattrs.transform_error(exc, path="config", format_exception=_format_exception)
        # "<problem> @ <path>" -> "<path>: <problem>", the shape of the consistency checks.
        lines = [
            f"{path}: {problem}" for problem, _, path in (m.rpartition(" @ ") for m in messages)
        ]
        raise _invalid(lines) from None
    config = attrs.evolve(config, data_dir=str((base_dir / config.data_dir).resolve()))
    _check_consistency(config)
    return config


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed TOML of a config file, not yet validated.

    Raises:
        ConfigError: the file is missing, unreadable or not TOML.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:  # a directory, no permission to read it, ...
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def merge_config(raw: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with `overlay` laid over it: tables are merged key by key, other values replaced."""
    merged = dict(raw)
    for key, value in overlay.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = merge_config(below, value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path, *, overlay: Mapping[str, Any] | None = None) -> Config:
    """Read a TOML config file.

    Args:
        overlay: tables laid over the file's before validation (``run --workers`` completes
            the deployment this way, in memory: see `trioserver.pool`).

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or has bad keys.
    """
    raw = read_config_file(path)
    if overlay:
        raw = merge_config(raw, overlay)
    return config_from_mapping(raw, base_dir=path.resolve().parent)


def _check_consistency(config: Config) -> None:
    from trioserver.events import KNOWN_ROOM_VERSIONS, is_valid_server_name

    problems = []
    if not is_valid_server_name(config.server_name):
        problems.append(f"config.server_name: {config.server_name!r} is not a valid server name")
    if not 0 <= config.http.port <= 65535:
        # 0 asks the OS for any free port (what tests use).
        problems.append(
            f"config.http.port: must be between 1 and 65535 (or 0: any free port),"
            f" got {config.http.port}"
        )
    if config.http.max_request_body_size < 1:
        problems.append("config.http.max_request_body_size: must be at least 1")
    if config.http.graceful_shutdown_seconds < 0:
        problems.append("config.http.graceful_shutdown_seconds: must not be negative")
    if config.rooms.default_room_version not in KNOWN_ROOM_VERSIONS:
        problems.append(
            f"config.rooms.default_room_version: {config.rooms.default_room_version!r} is not"
            f" a room version this server supports ({', '.join(KNOWN_ROOM_VERSIONS)})"
        )
    if not config.http.bind_addresses:
        problems.append("config.http.bind_addresses: needs at least one address")
    tls = (config.http.tls_certificate_path, config.http.tls_private_key_path)
    if (tls[0] is None) != (tls[1] is None):
        problems.append(
            "config.http: tls_certificate_path and tls_private_key_path must be set together"
        )
    fed = config.federation
    if fed.serve_well_known:
        url = urlsplit(fed.public_baseurl or "")
        if url.scheme != "https" or not url.hostname:
            problems.append(
                "config.federation.public_baseurl: serve_well_known needs an https URL of this"
                " server's federation listener, e.g. https://matrix.example.org:443"
            )
    if fed.port is not None and (
        fed.tls_certificate_path is None or fed.tls_private_key_path is None
    ):
        problems.append(
            "config.federation: a federation port needs tls_certificate_path and"
            " tls_private_key_path (other servers connect with TLS)"
        )
    if fed.port is not None and not 0 <= fed.port <= 65535:
        problems.append("config.federation.port: must be between 0 and 65535")
    if not 4 <= config.registration.bcrypt_rounds <= 31:
        problems.append("config.registration.bcrypt_rounds: must be between 4 and 31")
    if config.database.reader_connections < 1:
        problems.append("config.database.reader_connections: must be at least 1")
    if config.database.backend == "postgres":
        if not config.database.dsn:
            problems.append('config.database.dsn: required when backend = "postgres"')
        if config.database.min_connections < 0:
            problems.append("config.database.min_connections: must be at least 0")
        if config.database.max_connections < max(1, config.database.min_connections):
            problems.append(
                "config.database.max_connections: must be at least 1 and min_connections"
            )
        if config.database.connect_timeout_seconds <= 0:
            problems.append("config.database.connect_timeout_seconds: must be positive")
    problems += _voip_problems(config.voip)
    for key in ("timeout", "initial_backoff", "max_backoff"):
        if getattr(config.push, key) <= 0:
            problems.append(f"config.push.{key}: must be positive")
    if config.push.give_up_after < 0:
        problems.append("config.push.give_up_after: must not be negative")
    problems += _ip_range_problems(
        "push", config.push, ("ip_range_blocklist", "ip_range_allowlist")
    )
    problems += _media_problems(config.media)
    problems += _instance_problems(config)
    if problems:
        raise _invalid(problems)


def _instance_problems(config: Config) -> list[str]:
    problems = []
    known = {MAIN_INSTANCE, *config.workers}
    for stream in attrs.fields_dict(StreamWritersConfig):
        writer = config.stream_writers.writer_of(stream)
        if writer != config.instance_name and writer not in config.instance_map:
            problems.append(
                f"config.stream_writers.{stream}: instance {writer!r} is not in"
                " config.instance_map"
            )
        elif writer != MAIN_INSTANCE and stream != "events":
            # Workers forward every write to main, which serves these streams over
            # replication; only the events stream has a remote submit path (to its writer).
            problems.append(
                f"config.stream_writers.{stream}: only {MAIN_INSTANCE!r} can write this stream"
                " for now"
            )
    for role in attrs.fields_dict(RolesConfig):
        owner = getattr(config.roles, role)
        if owner != MAIN_INSTANCE and owner not in known:
            problems.append(
                f"config.roles.{role}: instance {owner!r} is neither main nor in config.workers"
            )
    if config.roles.pushers != MAIN_INSTANCE:
        # Receipts and device changes wake the pushers too, and main writes those.
        problems.append(f"config.roles.pushers: must be {MAIN_INSTANCE!r} for now")
    if config.roles.federation_sender != MAIN_INSTANCE:
        # It follows the events stream from main's in-memory notifications for now.
        problems.append(f"config.roles.federation_sender: must be {MAIN_INSTANCE!r} for now")
    events_writer = config.stream_writers.events
    if events_writer != MAIN_INSTANCE:
        location = config.instance_map.get(events_writer)
        if events_writer not in config.workers:
            problems.append(
                f"config.stream_writers.events: {events_writer!r} is neither main nor in"
                " config.workers"
            )
        elif (
            location is not None
            and location.replication_port is None
            and config.replication.redis is None
        ):
            problems.append(
                f"config.instance_map.{events_writer}.replication_port: needed for the events"
                " writer (the other instances follow its events stream there)"
            )
    if config.is_multi_instance:
        if not config.replication.secret:
            problems.append(
                "config.replication.secret: required when there is more than one instance"
                " (it authenticates replication and the internal endpoints)"
            )
        if MAIN_INSTANCE not in config.instance_map:
            problems.append(
                f"config.instance_map.{MAIN_INSTANCE}: needed when there is more than one"
                " instance (main's internal address, where workers forward writes)"
            )
    if not 0 <= config.replication.port <= 65535:
        problems.append("config.replication.port: must be between 0 and 65535")
    problems += _redis_problems(config.replication)
    for name, location in config.instance_map.items():
        if not 0 <= location.port <= 65535:
            problems.append(f"config.instance_map.{name}.port: must be between 0 and 65535")
        if location.replication_port is not None and not 0 <= location.replication_port <= 65535:
            problems.append(
                f"config.instance_map.{name}.replication_port: must be between 0 and 65535"
            )
    for name in config.workers:
        if name == MAIN_INSTANCE or not name.replace("_", "").replace("-", "").isalnum():
            problems.append(
                f"config.workers.{name}: a worker name is letters, digits, '-' and '_',"
                f" and not {MAIN_INSTANCE!r}"
            )
    return problems


def _redis_problems(replication: ReplicationConfig) -> list[str]:
    problems = []
    if replication.redis is not None:
        from trioserver.repl.resp import parse_redis_url  # only then: it loads hiredis

        try:
            parse_redis_url(replication.redis)
        except ValueError as e:
            # The message never quotes the URL: it may hold a password.
            problems.append(f"config.replication.redis: {e}")
    prefix = replication.redis_channel_prefix
    if not prefix or not all(c.isprintable() and not c.isspace() for c in prefix):
        problems.append(
            "config.replication.redis_channel_prefix: must be non-empty, without spaces or"
            " control characters"
        )
    return problems


def _ip_range_problems(section: str, values: object, keys: tuple[str, ...]) -> list[str]:
    problems = []
    for key in keys:
        for value in getattr(values, key):
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                problems.append(f"config.{section}.{key}: {value!r} is not an IP address range")
    return problems


def _media_problems(media: MediaConfig) -> list[str]:
    problems = []
    for key in ("max_upload_size", "max_image_pixels", "max_pending_uploads"):
        if getattr(media, key) < 1:
            problems.append(f"config.media.{key}: must be at least 1")
    for key in ("unused_expiration_time", "url_preview_timeout", "url_preview_max_size"):
        if getattr(media, key) <= 0:
            problems.append(f"config.media.{key}: must be positive")
    if media.url_preview_max_redirects < 0:
        problems.append("config.media.url_preview_max_redirects: must not be negative")
    for size in media.thumbnail_sizes:
        if not (1 <= size.width <= 10_000 and 1 <= size.height <= 10_000):
            problems.append(
                f"config.media.thumbnail_sizes: {size.width}x{size.height} is outside"
                " 1..10000 pixels"
            )
    problems += _ip_range_problems(
        "media", media, ("url_preview_ip_range_blocklist", "url_preview_ip_range_allowlist")
    )
    return problems


def _voip_problems(voip: VoipConfig) -> list[str]:
    problems = []
    if voip.turn_user_lifetime < 1:
        problems.append("config.voip.turn_user_lifetime: must be at least 1 (seconds)")
    for uri in voip.turn_uris:
        # Spec GET /voip/turnServer: the URIs are turn: or turns: URIs.
        if not uri.startswith(("turn:", "turns:")):
            problems.append(f"config.voip.turn_uris: {uri!r} is not a turn: or turns: URI")
    if (voip.turn_username is None) != (voip.turn_password is None):
        problems.append("config.voip: turn_username and turn_password must be set together")
    return problems
