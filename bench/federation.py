"""Federation (issue 15): inbound PDUs from a remote server, a join to a big remote room, and
state resolution, on a real server process, with the inbound workload also against Synapse.

The remote server is scripted (`fedlib.FakeRemote`): Hypercorn over TLS on loopback, named
``localhost:PORT``, with its own ed25519 key and a certificate from a test CA that the servers
under test trust. Each server under test is a real process on a fresh data dir (trioserver:
``python -m trioserver run`` with the bench config plus ``server_name = "localhost:FEDPORT"``
and a ``[federation]`` TLS listener; Synapse: `synapse.SynapseProcess` with a plain-HTTP
``federation`` listener added, ``federation_custom_ca_list`` = the test CA,
``ip_range_whitelist = ["127.0.0.0/8"]`` and ``rc_federation`` out of reach). Both create rooms
in their default room version, 12 for both. Per server, in this order:

1. **Join** (``--members``, 1,000): the remote hosts a public room with that many joined users
   of its own (every state event built and signed by it); a local user joins it with
   ``POST /join/{roomId}?server_name=<remote>``: make_join, then send_join answered with the
   whole state (no ``members_omitted``, whatever Synapse's ``omit_members`` asks) and its auth
   chain. Timed: the POST, request to answer, and the server's CPU over it. Peak RSS: the
   server's VmHWM is reset to its current RSS just before (``clear_refs`` 5, proc(5)) and read
   once the server is idle again after the join, so it is the join's peak, not start-up's
   (the process had only started and registered one user before).
2. **Inbound PDUs** (``--pdus``, 2,000): a local user creates a public room; the remote joins
   it (make_join/send_join against the server) and pushes messages from its user, each on the
   one before (``prev_events`` = [the previous message]), in transactions of 50 PDUs
   (``PUT /_matrix/federation/v1/send/{txnId}``, X-Matrix signed), one transaction at a time.
   All PDUs are built and signed before the timer starts, and one untimed transaction of 10
   warms up (key fetch, caches). Timed: from the first transaction until the last PDU is
   stored. "Stored" is read from the server's SQLite database through a read-only connection
   of this process (a row in ``events``, polled every millisecond: free for the server).
   Server CPU is utime + stime of the process over that window. The messages are then counted
   through the local user's ``/messages`` (untimed).

   Pacing (``--pace``): by default the next transaction goes once the previous one's PDUs are
   stored. trioserver answers a transaction after it stored its PDUs, so for it this is the
   same as sending on each answer; Synapse answers once the PDUs are *staged* and persists
   them in the background, and when 100 or more PDUs of a room are staged it drops all but the
   newest (``prune_staged_events_in_room``) and fetches only a few of the dropped ones back
   (``get_missing_events``, limit 10), the rest only on backfill. ``--pace answer`` sends on
   each answer, as a real sending server does; the rate then counts only the PDUs stored by
   the end of the window.

   Both servers are sent to over plain HTTP (Synapse's federation listener, trioserver's
   client listener, which serves the same routes); trioserver also over its TLS federation
   listener, on another room.
3. **State resolution** (in this process, no server): `resolve_state_groups` over the
   10,000-state-event room with a fork of `tests/unit/test_state_res_large.py` (two branches
   of 5 and 6 events: power levels, topic, a kick, joins), room versions 11 (v2) and 12
   (v2.1), median of ``--runs`` runs.

The issue's target: trioserver's inbound PDUs/s at least 5x Synapse's in the same run.

Run::

    .venv/bin/python bench/federation.py              # ~1 min, Synapse installed on first use
    .venv/bin/python bench/federation.py --quick      # smoke run
    .venv/bin/python bench/federation.py --server trioserver --pdus 5000
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

import trio

from fedlib import (
    TXN_PDUS,
    FakeRemote,
    RemoteClient,
    TestCa,
    build_member_room,
    make_test_ca,
    message_chain,
)

from benchlib import (
    CLIENT_V3,
    BackgroundLoad,
    ServerProcess,
    bytecode_cache_env,
    free_port,
    machine_summary,
    median,
    print_table,
    self_cpu_s,
    write_config,
)
from compare import ratio_text, settle, trioserver_revision
from loadgen import auth_headers, check_ok, register_user
from synapse import SynapseInstall, SynapseProcess, ensure_synapse

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.events import RoomVersion

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("trioserver", "synapse")
TARGET_FACTOR = 5
WARMUP_PDUS = 10
POLL_S = 0.001
STORED_TIMEOUT_S = 300.0
PACES = ("stored", "answer")
UNLIMITED_FEDERATION = {
    "window_size": 1000,
    "sleep_limit": 1_000_000,
    "sleep_delay": 1,
    "reject_limit": 1_000_000,
    "concurrent": 1_000_000,
}


@dataclass(frozen=True)
class Sizes:
    """How much each part does."""

    pdus: int
    members: int
    runs: int
    # When the remote sends its next transaction: once the previous one's PDUs are stored
    # ("stored"), or as soon as it was answered ("answer"; module docstring).
    pace: str = "stored"


FULL = Sizes(pdus=2000, members=1000, runs=7)
QUICK = Sizes(pdus=200, members=200, runs=3)


@dataclass
class Target:
    """A server under test: its process, name and the base URLs the remote sends to."""

    name: str
    process: ServerProcess
    server_name: str
    federation_urls: dict[str, str]  # "http" / "tls" -> base URL
    database: Path  # its SQLite file

    @property
    def client_url(self) -> str:
        """The client API's base URL."""
        return self.process.base_url


@dataclass
class InboundResult:
    """One inbound run."""

    transport: str
    pdus: int
    pace: str
    wall_s: float = math.nan
    # How many of the PDUs were stored by the end (Synapse, paced by answers, drops some of
    # its staged PDUs and fetches only the newest few again: module docstring).
    stored: int = 0
    server_cpu_s: float = math.nan
    client_cpu_s: float = math.nan
    rejected: dict[str, str] = field(default_factory=dict)
    delivered: int = 0

    @property
    def rate(self) -> float:
        """PDUs stored per second, from the first transaction to the last PDU stored."""
        return self.stored / self.wall_s

    @property
    def cpu_ms_per_pdu(self) -> float:
        """Server CPU milliseconds per stored PDU."""
        return self.server_cpu_s / self.stored * 1e3 if self.stored else math.nan


@dataclass
class JoinResult:
    """The join to the remote room."""

    wall_s: float = math.nan
    cpu_s: float = math.nan
    rss_before_kib: int = 0
    startup_hwm_kib: int = 0  # VmHWM before the join: the start-up's peak
    peak_kib: int = 0  # VmHWM from just before the join to once the server was idle again
    rss_after_kib: int = 0
    members_seen: int = 0


@dataclass
class ServerRun:
    """Everything measured on one server."""

    name: str
    join: JoinResult | None = None
    inbound: dict[str, InboundResult] = field(default_factory=dict)
    peak_rss_kib: int = 0
    failures: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)


# -- Servers -------------------------------------------------------------------------------


def trioserver_target(data_dir: Path, tls: TestCa) -> Target:
    """A trioserver process named ``localhost:FEDPORT`` with a TLS federation listener."""
    fed_port = free_port()
    config = write_config(data_dir)
    text = config.read_text(encoding="utf-8")
    name = f"localhost:{fed_port}"
    text = text.replace('server_name = "localhost"', f'server_name = "{name}"', 1)
    text += (
        "\n[federation]\n"
        f"port = {fed_port}\n"
        'bind_addresses = ["127.0.0.1"]\n'
        f'tls_certificate_path = "{tls.cert_path}"\n'
        f'tls_private_key_path = "{tls.key_path}"\n'
        f'ca_file = "{tls.ca_path}"\n'
        'ip_range_allowlist = ["127.0.0.0/8"]\n'
    )
    config.write_text(text, encoding="utf-8")
    process = ServerProcess(data_dir, env=bytecode_cache_env(data_dir / "pycache"))
    urls = {"http": process.base_url, "tls": f"https://127.0.0.1:{fed_port}"}
    return Target("trioserver", process, name, urls, data_dir / "homeserver.db")


class FederatingSynapse(SynapseProcess):
    """Synapse with a plain-HTTP federation listener, trusting the test CA (module doc)."""

    def __init__(self, install: SynapseInstall, data_dir: Path, tls: TestCa) -> None:
        super().__init__(install, data_dir)
        self.tls = tls
        self.federation_port = free_port()
        self.server_name = f"localhost:{self.federation_port}"

    def configure(self) -> None:
        """The bench overlay, plus federation settings laid over it."""
        super().configure()
        path = self.config_dir / "zz-bench.yaml"
        overlay: dict[str, Any] = json.loads(path.read_text())
        listener = {
            "port": self.federation_port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": False,
            "x_forwarded": False,
            "resources": [{"names": ["federation"], "compress": False}],
        }
        overlay["listeners"] = [*overlay["listeners"], listener]
        overlay["server_name"] = self.server_name
        overlay["federation_custom_ca_list"] = [str(self.tls.ca_path)]
        overlay["federation_verify_certificates"] = True
        overlay["ip_range_whitelist"] = ["127.0.0.0/8"]
        overlay["rc_federation"] = UNLIMITED_FEDERATION
        path.write_text(json.dumps(overlay, indent=1))


def synapse_target(data_dir: Path, tls: TestCa, install: SynapseInstall) -> Target:
    """A Synapse process (see `FederatingSynapse`)."""
    process = FederatingSynapse(install, data_dir, tls)
    urls = {"http": f"http://127.0.0.1:{process.federation_port}"}
    return Target("synapse", process, process.server_name, urls, process.database_path)


# -- Workloads -----------------------------------------------------------------------------


@dataclass
class LocalUser:
    """A user of the server under test, with a client on its client API."""

    user_id: str
    token: str
    http: httpx.AsyncClient

    async def get(self, path: str, **params: Any) -> httpx.Response:
        """A GET on the client API with the user's token."""
        return await self.http.get(path, params=params, headers=auth_headers(self.token))

    async def post(self, path: str, body: Any, **params: Any) -> dict[str, Any]:
        """A POST on the client API; its JSON answer (raises on non-200)."""
        response = await self.http.post(
            path, json=body, params=params, headers=auth_headers(self.token)
        )
        return check_ok(response)


async def remote_join(
    target: Target, remote: FakeRemote, user: LocalUser, version: RoomVersion, members: int
) -> JoinResult:
    """Part 1 of the module docstring."""
    room = build_member_room(remote, version, members)
    remote.host(room)
    await trio.to_thread.run_sync(settle, target.process)
    result = JoinResult()
    pid = target.process.pid
    before = target.process.memory_kib()
    result.rss_before_kib, result.startup_hwm_kib = before["VmRSS"], before["VmHWM"]
    # Reset VmHWM to the current RSS (proc(5), clear_refs "5"): the peak from here on is
    # the join's, not the start-up's.
    await trio.Path(f"/proc/{pid}/clear_refs").write_text("5")
    path = f"{CLIENT_V3}/join/{quote(room.room_id, safe='')}"
    cpu, started = target.process.cpu_s(), time.perf_counter()
    await user.post(path, {}, server_name=remote.server_name)
    result.wall_s = time.perf_counter() - started
    result.cpu_s = target.process.cpu_s() - cpu
    await trio.to_thread.run_sync(settle, target.process)  # and what the join left to do
    after = target.process.memory_kib()
    result.rss_after_kib, result.peak_kib = after["VmRSS"], after["VmHWM"]
    joined = await user.get(f"{CLIENT_V3}/rooms/{quote(room.room_id, safe='')}/joined_members")
    result.members_seen = len(check_ok(joined).get("joined", {}))
    return result


class PersistedProbe:
    """Whether the server has stored an event (a row in its ``events`` table, accepted or
    rejected), read through a read-only SQLite connection of this process: polling it costs
    the server nothing (both servers keep SQLite in WAL mode, so a reader sees each commit).
    """

    def __init__(self, database: Path) -> None:
        self._conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1.0)

    def stored(self, event_id: str) -> bool:
        """Whether `event_id` is in the ``events`` table now."""
        query = "SELECT 1 FROM events WHERE event_id = ?"
        return self._conn.execute(query, (event_id,)).fetchone() is not None

    async def wait(self, event_id: str) -> None:
        """Return once `event_id` is stored.

        Raises:
            RuntimeError: not stored within `STORED_TIMEOUT_S`.
        """
        deadline = time.perf_counter() + STORED_TIMEOUT_S
        while not self.stored(event_id):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{event_id} not stored after {STORED_TIMEOUT_S:.0f} s")
            await trio.sleep(POLL_S)

    def count(self, event_ids: list[str]) -> int:
        """How many of `event_ids` are in the ``events`` table now."""
        total = 0
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i : i + 500]
            query = f"SELECT COUNT(*) FROM events WHERE event_id IN ({','.join('?' * len(chunk))})"
            total += self._conn.execute(query, chunk).fetchone()[0]
        return total

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


async def inbound(
    target: Target,
    remote: FakeRemote,
    user: LocalUser,
    transport: str,
    sizes: Sizes,
    ca: TestCa,
) -> InboundResult:
    """Part 2 of the module docstring."""
    created = await user.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
    room_id = created["room_id"]
    sender = f"@sender{len(remote.rooms)}:{remote.server_name}"
    verify: Any = str(ca.ca_path) if transport == "tls" else True
    url = target.federation_urls[transport]
    probe = PersistedProbe(target.database)
    async with httpx.AsyncClient(base_url=url, verify=verify, timeout=120) as http:
        client = RemoteClient(remote, http, target.server_name)
        room = await client.join(room_id, sender)
        remote.host(room)  # the server may ask for the remote's events
        warm_up = message_chain(remote, room, sender, WARMUP_PDUS)
        timed = message_chain(remote, room, sender, sizes.pdus)
        batches = [
            ([e.get_pdu_json() for e in timed[i : i + TXN_PDUS]], timed[i : i + TXN_PDUS][-1])
            for i in range(0, len(timed), TXN_PDUS)
        ]
        result = InboundResult(transport, sizes.pdus, sizes.pace)
        await client.send_transaction(
            f"warm-{time.time_ns()}", [e.get_pdu_json() for e in warm_up]
        )
        await probe.wait(warm_up[-1].event_id)
        await trio.to_thread.run_sync(settle, target.process)
        cpu, own, started = target.process.cpu_s(), self_cpu_s(), time.perf_counter()
        for n, (pdus, last) in enumerate(batches):
            answer = await client.send_transaction(f"t{time.time_ns()}-{n}", pdus)
            result.rejected |= {e: str(r["error"]) for e, r in answer.items() if r.get("error")}
            if sizes.pace == "stored":
                await probe.wait(last.event_id)
        await probe.wait(timed[-1].event_id)
        result.wall_s = time.perf_counter() - started
        result.server_cpu_s = target.process.cpu_s() - cpu
        result.client_cpu_s = self_cpu_s() - own
        result.stored = probe.count([e.event_id for e in timed])
    probe.close()
    result.delivered = await count_messages(user, room_id, sender)
    return result


async def count_messages(user: LocalUser, room_id: str, sender: str) -> int:
    """How many ``m.room.message`` events of `sender` the user's ``/messages`` shows."""
    path = f"{CLIENT_V3}/rooms/{quote(room_id, safe='')}/messages"
    count, params = 0, {"dir": "b", "limit": "1000"}
    while True:
        page = check_ok(await user.get(path, **params))
        chunk = page.get("chunk", [])
        count += sum(1 for e in chunk if e["type"] == "m.room.message" and e["sender"] == sender)
        if not chunk or "end" not in page:
            return count
        params["from"] = page["end"]


def state_resolution(runs: int) -> list[tuple[str, int, float]]:
    """Part 3 of the module docstring: (room version, state events resolved, median ms)."""
    sys.path.insert(0, str(ROOT))  # the room builder lives with the unit tests
    from trioserver.events import RoomVersions, resolve_state_groups

    from tests.unit.test_state_res_large import LargeRoom

    results = []
    for version in (RoomVersions.V11, RoomVersions.V12):
        room = LargeRoom(version)
        factory = room.factory
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            resolved = resolve_state_groups(factory.version, room.state_sets, factory.events)
            samples.append(time.perf_counter() - started)
            if resolved != room.expected:
                raise RuntimeError(f"v{version.identifier}: unexpected resolution")
        results.append((version.identifier, len(resolved), median(samples) * 1e3))
    return results


# -- One server ----------------------------------------------------------------------------


async def run_server(target: Target, remote: FakeRemote, sizes: Sizes, ca: TestCa) -> ServerRun:
    """Start the server, run parts 1 and 2 on it, stop it."""
    run = ServerRun(target.name)
    process = target.process
    startup = await trio.to_thread.run_sync(process.start)
    print(f"{target.name}: ready in {startup:.2f} s as {target.server_name}", flush=True)
    try:
        async with httpx.AsyncClient(base_url=target.client_url, timeout=300) as http:
            user_id, token = await register_user(http, "local")
            user = LocalUser(user_id, token, http)
            version = await default_room_version(user)
            await _part(run, "join", remote_join(target, remote, user, version, sizes.members))
            for transport in target.federation_urls:
                await _part(run, transport, inbound(target, remote, user, transport, sizes, ca))
        run.peak_rss_kib = process.memory_kib()["VmHWM"]
    finally:
        status = await trio.to_thread.run_sync(process.stop)
        if status not in (0, -15):
            print(f"{target.name}: exited with status {status}:\n{process.log_tail()}")
        run.log_errors = log_errors(process)
    return run


def log_errors(process: ServerProcess) -> list[str]:
    """The ERROR and CRITICAL lines and traceback headers of the server's logs."""
    found: list[str] = []
    for path in (process.log_path, getattr(process, "warnings_path", None)):
        if path is None or not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                found.append(line)
    return found


async def _part(run: ServerRun, name: str, part: Any) -> None:
    """Await one part, keeping its result; a failure is reported, not fatal."""
    started = time.perf_counter()
    try:
        result = await part
    except Exception as error:  # one failed part must not lose the others
        run.failures.append(f"{name}: {type(error).__name__}: {error}"[:800])
        print(f"  {name}: FAILED: {run.failures[-1]}", flush=True)
        return
    if isinstance(result, JoinResult):
        run.join = result
        print(f"  join: {result.wall_s:.2f} s, {result.members_seen} members", flush=True)
    else:
        run.inbound[name] = result
        took = time.perf_counter() - started
        print(f"  inbound ({name}): {result.rate:.0f} PDUs/s ({took:.0f} s with set-up)")


async def default_room_version(user: LocalUser) -> RoomVersion:
    """The server's default room version (``/capabilities``), as a trioserver `RoomVersion`."""
    from trioserver.events import KNOWN_ROOM_VERSIONS

    caps = check_ok(await user.get(f"{CLIENT_V3}/capabilities"))
    return KNOWN_ROOM_VERSIONS[caps["capabilities"]["m.room_versions"]["default"]]


# -- Report --------------------------------------------------------------------------------


def _mb(kib: int) -> str:
    return f"{kib / 1024:.1f}"


Row = list[str]


def _cells(runs: dict[str, ServerRun], value: Callable[[ServerRun], str]) -> list[str]:
    """One cell per server: `value` of its run, or "-" when it has no such figure."""
    cells = []
    for name in SERVERS:
        run = runs.get(name)
        try:
            cells.append(value(run) if run is not None else "-")
        except (KeyError, AttributeError):  # the part failed or was not run there
            cells.append("-")
    return cells


def _ratio(runs: dict[str, ServerRun], value: Callable[[ServerRun], float], lower: bool) -> str:
    figures = _cells(runs, lambda r: repr(value(r)))
    if "-" in figures:
        return "-"
    return ratio_text(*map(float, figures), lower_is_better=lower)[0]


def inbound_rows(runs: dict[str, ServerRun], transport: str, label: str) -> list[Row]:
    """The inbound figures over one transport."""

    def of(run: ServerRun) -> InboundResult:
        return run.inbound[transport]

    def share(run: ServerRun) -> str:
        return f"{of(run).client_cpu_s / of(run).wall_s * 100:.0f}%"

    rate = _ratio(runs, lambda r: of(r).rate, lower=False)
    target = ""
    if transport == "http":
        target = f"≥ {TARGET_FACTOR}x faster"
        factor = inbound_factor(runs)
        if not math.isnan(factor):
            target += ": met" if factor >= TARGET_FACTOR else ": MISSED"
    return [
        [f"inbound, {label}, PDUs/s", *_cells(runs, lambda r: f"{of(r).rate:.0f}"), rate, target],
        [
            "  server CPU per PDU, ms",
            *_cells(runs, lambda r: f"{of(r).cpu_ms_per_pdu:.2f}"),
            _ratio(runs, lambda r: of(r).cpu_ms_per_pdu, lower=True),
            "",
        ],
        ["  wall time, s", *_cells(runs, lambda r: f"{of(r).wall_s:.2f}"), "", ""],
        ["  load-gen CPU (one core = 100%)", *_cells(runs, share), "", ""],
        [
            "  sent / stored in the window / seen later in /messages / rejected",
            *_cells(
                runs,
                lambda r: (
                    f"{of(r).pdus} / {of(r).stored} / {of(r).delivered - WARMUP_PDUS}"
                    f" / {len(of(r).rejected)}"
                ),
            ),
            "",
            "",
        ],
    ]


def inbound_factor(runs: dict[str, ServerRun]) -> float:
    """trioserver's inbound PDUs/s over Synapse's (plain HTTP), NaN unless both ran."""
    try:
        return runs["trioserver"].inbound["http"].rate / runs["synapse"].inbound["http"].rate
    except KeyError:
        return math.nan


def join_rows(runs: dict[str, ServerRun], members: int) -> list[Row]:
    """The join figures."""

    def of(run: ServerRun) -> JoinResult:
        if run.join is None:
            raise KeyError("join")
        return run.join

    return [
        [
            f"join a remote room of {members} members, s",
            *_cells(runs, lambda r: f"{of(r).wall_s:.2f}"),
            _ratio(runs, lambda r: of(r).wall_s, lower=True),
            "",
        ],
        [
            "  server CPU, s",
            *_cells(runs, lambda r: f"{of(r).cpu_s:.2f}"),
            _ratio(runs, lambda r: of(r).cpu_s, lower=True),
            "",
        ],
        [
            "  peak RSS during the join (VmHWM reset before it), MB",
            *_cells(runs, lambda r: _mb(of(r).peak_kib)),
            _ratio(runs, lambda r: of(r).peak_kib, lower=True),
            "",
        ],
        [
            "  VmRSS before / after; start-up VmHWM, MB",
            *_cells(
                runs,
                lambda r: (
                    f"{_mb(of(r).rss_before_kib)} / {_mb(of(r).rss_after_kib)};"
                    f" {_mb(of(r).startup_hwm_kib)}"
                ),
            ),
            "",
            "",
        ],
        ["  joined members seen", *_cells(runs, lambda r: str(of(r).members_seen)), "", ""],
    ]


def report(
    runs: dict[str, ServerRun], sizes: Sizes, state_res: list[tuple[str, int, float]]
) -> None:
    """Print the table and the issue's target."""
    rows = inbound_rows(runs, "http", f"{sizes.pdus} PDUs, plain HTTP")
    if any("tls" in r.inbound for r in runs.values()):
        rows += inbound_rows(runs, "tls", f"{sizes.pdus} PDUs, TLS listener")
    rows += join_rows(runs, sizes.members)
    peak = _cells(runs, lambda r: _mb(r.peak_rss_kib) if r.peak_rss_kib else "-")
    rows.append(["VmHWM at the end (since the reset before the join), MB", *peak, "", ""])
    for version, resolved, ms in state_res:
        algorithm = "v2.1" if version == "12" else "v2"
        label = f"state res {algorithm} (room v{version}), {resolved} state events, median ms"
        rows.append([label, f"{ms:.1f}", "-", "", ""])
    print_table(["measure", "trioserver", "Synapse", "trioserver vs Synapse", "target"], rows)
    factor = inbound_factor(runs)
    if not math.isnan(factor):
        verdict = "met" if factor >= TARGET_FACTOR else "NOT MET"
        print(
            f"\nThe issue's target: inbound PDUs/s >= {TARGET_FACTOR}x Synapse's;"
            f" measured {factor:.1f}x: {verdict}"
        )


# -- Command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--server", choices=[*SERVERS, "both"], default="both")
    parser.add_argument("--pdus", type=int, help="inbound PDUs per run [2000]")
    parser.add_argument("--members", type=int, help="members of the remote room [1000]")
    parser.add_argument("--runs", type=int, help="state resolution runs [7]")
    parser.add_argument(
        "--pace",
        choices=PACES,
        default="stored",
        help="send the next transaction once the last one's PDUs are stored, or once it was"
        " answered [stored]",
    )
    parser.add_argument("--synapse-version", help="matrix-synapse release (default: newest)")
    parser.add_argument("--synapse-venv", type=Path, help="venv to use or create")
    return parser.parse_args(argv)


async def run_all(
    names: tuple[str, ...], install: SynapseInstall | None, sizes: Sizes
) -> dict[str, ServerRun]:
    """Each server in turn against one fake remote."""
    runs: dict[str, ServerRun] = {}
    with tempfile.TemporaryDirectory(prefix="trioserver-federation-") as tmp:
        root = Path(tmp)
        ca = make_test_ca(root)
        remote = FakeRemote(free_port(), ca)
        async with trio.open_nursery() as nursery:
            await nursery.start(remote.run)
            print(f"fake remote: {remote.server_name}", flush=True)
            for name in names:
                data_dir = root / name
                if name == "trioserver":
                    target = trioserver_target(data_dir, ca)
                else:
                    assert install is not None
                    target = synapse_target(data_dir, ca, install)
                runs[name] = await run_server(target, remote, sizes, ca)
            nursery.cancel_scope.cancel()
        print(f"fake remote: requests by kind: {dict(sorted(remote.requests.items()))}")
        if remote.unexpected:
            print(f"fake remote: unscripted requests: {remote.unexpected[:20]}")
    return runs


def main(argv: list[str] | None = None) -> None:
    """Run the parts on each selected server and print the table."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sizes = Sizes(
        pdus=args.pdus or sizes.pdus,
        members=args.members or sizes.members,
        runs=args.runs or sizes.runs,
        pace=args.pace,
    )
    names = SERVERS if args.server == "both" else (args.server,)
    install = None
    if "synapse" in names:
        install = ensure_synapse(args.synapse_version, args.synapse_venv)
    print(f"machine: {machine_summary()}")
    print(f"trioserver: {trioserver_revision()}")
    if install is not None:
        print(f"Synapse: {install.version} ({install.python})")
    print(f"sizes: {sizes}")
    background = BackgroundLoad()
    started = time.perf_counter()
    runs = trio.run(run_all, names, install, sizes)
    state_res = state_resolution(sizes.runs)
    print()
    report(runs, sizes, state_res)
    for run in runs.values():
        for failure in run.failures:
            print(f"{run.name} failed: {failure}")
        if run.log_errors:
            print(f"{run.name}: {len(run.log_errors)} error lines in its log, the first:")
            print("\n".join(f"  {line[:300]}" for line in run.log_errors[:5]))
        for transport, result in run.inbound.items():
            for event_id, reason in list(result.rejected.items())[:5]:
                print(f"{run.name} ({transport}) rejected {event_id}: {reason}")
    print(f"total {time.perf_counter() - started:.0f} s")
    print(background.report())


if __name__ == "__main__":
    main()
