"""Which writes a worker forwards to main (issue 13): the table, route by route.

A POST/PUT/DELETE is forwarded unless its route says ``local=True`` (it writes no replicated
stream). Both sets are spelled out here so that a new route must be classified on purpose:
adding one without updating this file fails `test_every_write_route_is_classified`.
"""

from __future__ import annotations

from trioserver.api.app import ROUTE_TABLES
from trioserver.api.http import _is_forwarded

# (method, handler module, handler name) of every write a worker answers itself.
EXPECTED_LOCAL = {
    ("POST", "filters", "post_filter"),
    ("POST", "directory", "post_public_rooms"),  # a read with a body
    ("POST", "e2ee", "post_keys_query"),
    ("POST", "e2ee", "post_keys_claim"),  # deletes one-time keys: no stream
    ("POST", "user_directory", "post_user_directory_search"),
    ("POST", "openid", "post_request_token"),
    # The 3pid endpoints write nothing (no identity server support).
    ("POST", "threepid", "post_add"),
    ("POST", "threepid", "post_bind"),
    ("POST", "threepid", "post_remove"),
    ("POST", "threepid", "post_request_token"),
    # Key backups are rows, not a stream.
    ("POST", "room_keys", "post_version"),
    ("PUT", "room_keys", "put_version"),
    ("DELETE", "room_keys", "delete_version"),
    ("PUT", "room_keys", "put_keys"),
    ("DELETE", "room_keys", "delete_keys"),
    ("POST", "reports", "post_event_report"),
    ("POST", "reports", "post_room_report"),
    ("POST", "reports", "post_user_report"),
    ("POST", "search", "post_search"),
    # Media rows are not a stream.
    ("POST", "media", "upload"),
    ("POST", "media", "create"),
    ("PUT", "media", "upload_to"),
    # Issue 15: Server-Server API reads with a body.
    ("POST", "keys", "post_query"),
    ("POST", "server_api", "post_missing_events"),
    ("POST", "server_api", "post_public_rooms"),
}

# Every write forwarded to main, and the stream it writes (or why it is forwarded).
EXPECTED_FORWARDED = {
    ("POST", "login", "post_login"): "device_lists (new device)",
    ("POST", "login", "post_logout"): "device_lists",
    ("POST", "login", "post_logout_all"): "device_lists",
    ("POST", "register", "post_register"): "device_lists, account_data",
    ("POST", "account", "post_password"): "device_lists (logs other devices out)",
    ("POST", "account", "post_deactivate"): "events (leaves rooms), device_lists",
    ("PUT", "devices", "put_device"): "device_lists",
    ("DELETE", "devices", "delete_device"): "device_lists",
    ("POST", "devices", "post_delete_devices"): "device_lists",
    ("POST", "admin", "post_register"): "device_lists, account_data",
    ("POST", "rooms", "post_create_room"): "events",
    ("POST", "rooms", "post_join_by_id_or_alias"): "events, account_data (join listeners)",
    ("POST", "rooms", "post_knock"): "events",
    ("POST", "rooms", "post_room_join"): "events, account_data (join listeners)",
    ("POST", "rooms", "post_leave"): "events",
    ("POST", "rooms", "post_invite"): "events",
    ("POST", "rooms", "post_kick"): "events",
    ("POST", "rooms", "post_ban"): "events",
    ("POST", "rooms", "post_unban"): "events",
    ("POST", "rooms", "post_forget"): "unsure: membership rows /sync reads; kept on main",
    ("POST", "room_send", "post_send"): "events",
    ("PUT", "room_send", "put_send"): "events",
    ("PUT", "room_send", "put_state"): "events",
    ("PUT", "room_send", "put_redact"): "events",
    ("POST", "room_send", "post_redact"): "events",
    ("POST", "room_upgrade", "post_upgrade"): "events",
    ("PUT", "profile", "put_field"): "events (member events), user directory",
    ("DELETE", "profile", "delete_field"): "events (member events), user directory",
    ("PUT", "directory", "put_alias"): "unsure: aliases are cached; kept on main",
    ("DELETE", "directory", "delete_alias"): "events (canonical alias)",
    ("PUT", "directory", "put_visibility"): "unsure: room directory; kept on main",
    ("PUT", "ephemeral", "put_typing"): "typing",
    ("POST", "ephemeral", "post_receipt"): "receipts",
    ("POST", "ephemeral", "post_read_markers"): "receipts, account_data",
    ("PUT", "ephemeral", "put_presence"): "presence",
    ("PUT", "account_data", "put_global"): "account_data",
    ("PUT", "account_data", "put_room"): "account_data",
    ("PUT", "account_data", "put_tag"): "account_data",
    ("DELETE", "account_data", "delete_tag"): "account_data",
    ("PUT", "e2ee", "put_send_to_device"): "to_device",
    ("POST", "e2ee", "post_keys_upload"): "device_lists",
    ("POST", "e2ee", "post_device_signing_upload"): "device_lists",
    ("POST", "e2ee", "post_signatures_upload"): "device_lists",
    ("PUT", "push_rules", "put_push_rule"): "account_data (push rules)",
    ("DELETE", "push_rules", "delete_push_rule"): "account_data (push rules)",
    ("POST", "pushers", "set_pusher"): "pushers run on main (roles.pushers)",
    # Issue 15: events from other servers are judged and stored by the events writer.
    ("PUT", "server_api", "put_send"): "events (received)",
    ("PUT", "server_api", "put_send_join"): "events (received)",
    ("PUT", "server_api", "put_send_join_v1"): "events (received)",
    ("PUT", "server_api", "put_send_leave"): "events (received)",
    ("PUT", "server_api", "put_send_leave_v1"): "events (received)",
    ("PUT", "server_api", "put_send_knock"): "events (received)",
    ("PUT", "server_api", "put_invite"): "events (received invite)",
    ("PUT", "server_api", "put_invite_v1"): "events (received invite)",
}


def _write_routes() -> dict[tuple[str, str, str], bool]:
    """(method, module, handler) -> forwarded, for every POST/PUT/DELETE route."""
    classified: dict[tuple[str, str, str], bool] = {}
    for table in ROUTE_TABLES:
        for route in table:
            if route.method not in ("POST", "PUT", "DELETE"):
                continue
            key = (
                route.method,
                route.handler.__module__.rsplit(".", 1)[-1],
                route.handler.__name__,
            )
            forwarded = _is_forwarded(route.method, route)
            # One handler on several paths must be classified the same on all of them.
            assert classified.get(key, forwarded) == forwarded, key
            classified[key] = forwarded
    return classified


def test_every_write_route_is_classified() -> None:
    classified = _write_routes()
    assert set(classified) == EXPECTED_LOCAL | set(EXPECTED_FORWARDED)
    assert not EXPECTED_LOCAL & set(EXPECTED_FORWARDED)


def test_local_writes_are_exactly_the_expected_ones() -> None:
    local = {key for key, forwarded in _write_routes().items() if not forwarded}
    assert local == EXPECTED_LOCAL


def test_forwarded_writes_are_exactly_the_expected_ones() -> None:
    forwarded = {key for key, is_forwarded in _write_routes().items() if is_forwarded}
    assert forwarded == set(EXPECTED_FORWARDED)


# Reads main must answer because it keeps what they hand out in memory.
EXPECTED_ON_MAIN_READS = {
    ("GET", "admin", "get_nonce"),
    ("GET", "spaces", "get_hierarchy"),
    # Issue 15: the template is built on the events writer's view of the room head, which
    # only main (as the writer that federates) has.
    ("GET", "server_api", "get_make_join"),
    ("GET", "server_api", "get_make_leave"),
    ("GET", "server_api", "get_make_knock"),
}


def test_reads_are_forwarded_only_where_main_keeps_state() -> None:
    on_main = set()
    for table in ROUTE_TABLES:
        for route in table:
            if route.method in ("GET", "HEAD"):
                assert not route.local, "local=True is meaningless on a read"
                if _is_forwarded(route.method, route):
                    module = route.handler.__module__.rsplit(".", 1)[-1]
                    on_main.add((route.method, module, route.handler.__name__))
    assert on_main == EXPECTED_ON_MAIN_READS
