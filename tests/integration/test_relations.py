"""/relations, relation checks on send, and edit/reference aggregations, over real HTTP.

Spec "Forming relationships between events", "Event replacements", "Reference relations",
"Annotations"; Synapse's behaviour where the spec leaves it open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

import trio

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.relation_helpers import (
    bundled,
    edit,
    get_relations,
    react,
    reference,
    relations,
    thread_reply,
)
from tests.integration.room_helpers import (
    create_room,
    ids,
    join,
    messages,
    send,
    send_text,
    set_visibility,
)


async def _room_with_root(alice: Client, bob: Client | None = None) -> tuple[str, str]:
    room = await create_room(alice, preset="public_chat")
    if bob is not None:
        await join(bob, room)
    return room, await send_text(alice, room, "root")


async def _page_all(
    client: Client, room: str, root: str, direction: str, limit: int
) -> tuple[list[str], list[dict[str, Any]]]:
    found: list[str] = []
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"dir": direction, "limit": limit}
    for _ in range(50):
        page = await relations(client, room, root, **params)
        pages.append(page)
        found += ids(page["chunk"])
        if "next_batch" not in page:
            return found, pages
        params["from"] = page["next_batch"]
    raise AssertionError("pagination did not end")


async def test_relations_page_backwards_and_forwards(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    children = [await reference(alice, room, root, f"ref {i}") for i in range(5)]
    await send_text(alice, room, "unrelated")
    backwards, pages = await _page_all(alice, room, root, "b", 2)
    assert backwards == children[::-1]
    assert [len(p["chunk"]) for p in pages] == [2, 2, 1]
    assert "prev_batch" not in pages[0]
    assert pages[1]["prev_batch"] == pages[0]["next_batch"]
    forwards, _ = await _page_all(alice, room, root, "f", 2)
    assert forwards == children
    # Default: newest first, five at most; events in client format with room_id.
    default = await relations(alice, room, root)
    assert ids(default["chunk"]) == children[::-1]
    assert default["chunk"][0]["room_id"] == room
    assert "recursion_depth" not in default


async def test_relations_tokens_work_with_messages_tokens(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    early = await reference(alice, room, root, "early")
    middle = await messages(alice, room, dir="b", limit=1)
    late = await reference(alice, room, root, "late")
    # A /messages token taken between the two: backwards from it finds only the early one.
    page = await relations(alice, room, root, **{"from": middle["start"]})
    assert ids(page["chunk"]) == [early]
    # Forwards from the start up to that token: the early one only too.
    page = await relations(alice, room, root, dir="f", to=middle["start"])
    assert ids(page["chunk"]) == [early]
    # A /relations token given to /messages pages on from the same point.
    first = await relations(alice, room, root, limit=1)
    assert ids(first["chunk"]) == [late]
    after = await messages(alice, room, dir="b", limit=1, **{"from": first["next_batch"]})
    assert ids(after["chunk"]) != [late]


async def test_rel_type_and_event_type_filters(alice: Client, bob: Client) -> None:
    room, root = await _room_with_root(alice, bob)
    reply = await thread_reply(bob, room, root, "in thread")
    reaction = assert_ok(await react(bob, room, root, "👍"))["event_id"]
    ref = await reference(alice, room, root, "see above")
    everything = await relations(alice, room, root)
    assert ids(everything["chunk"]) == [ref, reaction, reply]
    assert ids((await relations(alice, room, root, "m.thread"))["chunk"]) == [reply]
    annotations = await relations(alice, room, root, "m.annotation", "m.reaction")
    assert ids(annotations["chunk"]) == [reaction]
    assert (await relations(alice, room, root, "m.annotation", "m.room.message"))["chunk"] == []
    assert (await relations(alice, room, root, "org.example.unknown"))["chunk"] == []


async def test_recurse_follows_relations_of_relations(alice: Client, bob: Client) -> None:
    room, root = await _room_with_root(alice, bob)
    reply = await thread_reply(bob, room, root, "in thread")
    reply_edit = await edit(bob, room, reply, "in thread (edited)")
    reaction = assert_ok(await react(alice, room, reply, "🎉"))["event_id"]
    direct = await relations(alice, room, root)
    assert ids(direct["chunk"]) == [reply]
    deep = await relations(alice, room, root, recurse="true")
    assert ids(deep["chunk"]) == [reaction, reply_edit, reply]
    assert deep["recursion_depth"] == 3
    # The filters apply at every depth.
    only_edits = await relations(alice, room, root, "m.replace", recurse="true", dir="f")
    assert ids(only_edits["chunk"]) == [reply_edit]
    # `recurse=false` is the default behaviour, but the client gave it: still no depth field
    # (Synapse sends it only for `true`).
    assert "recursion_depth" not in await relations(alice, room, root, recurse="false")


async def test_bad_parameters_are_400(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    for params, errcode in [
        ({"dir": "sideways"}, "M_INVALID_PARAM"),
        ({"limit": "many"}, "M_INVALID_PARAM"),
        ({"limit": "0"}, "M_INVALID_PARAM"),
        ({"limit": "-3"}, "M_INVALID_PARAM"),
        ({"from": "not-a-token"}, "M_INVALID_PARAM"),
        ({"to": "t1-99999999999999999999999"}, "M_INVALID_PARAM"),
        ({"recurse": "yes"}, "M_INVALID_PARAM"),
    ]:
        response = await get_relations(alice, room, root, **params)
        assert_error(response, 400, errcode)
    # A huge limit is capped, not refused.
    assert (await relations(alice, room, root, limit="100000"))["chunk"] == []


async def test_unknown_and_foreign_events_are_404(alice: Client) -> None:
    room, _ = await _room_with_root(alice)
    other_room, other_root = await _room_with_root(alice)
    await reference(alice, other_room, other_root, "elsewhere")
    assert_error(await get_relations(alice, room, "$nope:test"), 404, "M_NOT_FOUND")
    # An event of another room is not found through this one.
    assert_error(await get_relations(alice, room, other_root), 404, "M_NOT_FOUND")
    # A room that does not exist: the user is not in it (403, as Synapse).
    assert_error(await get_relations(alice, "!nope:test", other_root), 403, "M_FORBIDDEN")


async def test_non_members_cannot_read_relations(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="private_chat")
    root = await send_text(alice, room, "secret")
    await reference(alice, room, root, "secret ref")
    assert_error(await get_relations(bob, room, root), 403, "M_FORBIDDEN")
    # A world-readable room is readable by anyone, from the visibility change on.
    await set_visibility(alice, room, "world_readable")
    assert_error(await get_relations(bob, room, root), 404, "M_NOT_FOUND")
    public_root = await send_text(alice, room, "public")
    ref = await reference(alice, room, public_root, "public ref")
    assert ids((await relations(bob, room, public_root))["chunk"]) == [ref]


async def test_relations_follow_history_visibility(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await set_visibility(alice, room, "joined")
    root = await send_text(alice, room, "root")
    await join(bob, room)
    # Bob joined after the root: with "joined" visibility he may not see it.
    assert_error(await get_relations(bob, room, root), 404, "M_NOT_FOUND")
    seen_root = await send_text(alice, room, "visible root")
    ref = await reference(alice, room, seen_root, "visible ref")
    assert ids((await relations(bob, room, seen_root))["chunk"]) == [ref]


async def test_ignored_users_relations_are_hidden(alice: Client, bob: Client) -> None:
    room, root = await _room_with_root(alice, bob)
    await reference(bob, room, root, "from bob")
    mine = await reference(alice, room, root, "from alice")
    ignore: dict[str, Any] = {"ignored_users": {bob.user_id: {}}}
    assert_ok(await alice.put(f"/user/{alice.user_id}/account_data/m.ignored_user_list", ignore))
    assert ids((await relations(alice, room, root))["chunk"]) == [mine]
    body = assert_ok(await alice.get(f"/rooms/{room}/event/{root}"))
    assert bundled(body)["m.reference"] == {"chunk": [{"event_id": mine}]}


# -- Checks on send -----------------------------------------------------------------------


async def test_relation_to_another_rooms_event_is_refused(alice: Client) -> None:
    room, _ = await _room_with_root(alice)
    _, other_root = await _room_with_root(alice)
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": other_root, "key": "x"}}
    response = await alice.put(f"/rooms/{room}/send/m.reaction/foreign", content)
    assert_error(response, 400, "M_UNKNOWN")
    unknown = {"m.relates_to": {"rel_type": "m.reference", "event_id": "$unknown:test"}}
    response = await alice.put(f"/rooms/{room}/send/m.room.message/unknown", unknown)
    assert_error(response, 400, "M_UNKNOWN")


async def test_duplicate_annotation_is_refused(alice: Client, bob: Client) -> None:
    room, root = await _room_with_root(alice, bob)
    assert_ok(await react(alice, room, root, "👍"))
    assert_error(await react(alice, room, root, "👍"), 400, "M_DUPLICATE_ANNOTATION")
    # Another key, or another sender, is fine.
    assert_ok(await react(alice, room, root, "👎"))
    assert_ok(await react(bob, room, root, "👍"))
    found = await relations(alice, room, root, "m.annotation")
    assert len(found["chunk"]) == 3
    # Once the reaction is redacted it may be sent again.
    first = found["chunk"][-1]["event_id"]
    assert_ok(await alice.put(f"/rooms/{room}/redact/{first}/undo", {}))
    assert_ok(await react(alice, room, root, "👍"))


async def test_bad_annotations_are_refused(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    keyless = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root}}
    assert_error(await alice.put(f"/rooms/{room}/send/m.reaction/k1", keyless), 400, "M_UNKNOWN")
    long_key = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "x" * 501}}
    assert_error(await alice.put(f"/rooms/{room}/send/m.reaction/k2", long_key), 400, "M_UNKNOWN")
    assert (await relations(alice, room, root))["chunk"] == []


async def test_thread_cannot_start_from_a_relation(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    reply = await thread_reply(alice, room, root, "reply")
    relates_to = {"rel_type": "m.thread", "event_id": reply}
    content = {"body": "x", "msgtype": "m.text", "m.relates_to": relates_to}
    response = await alice.put(f"/rooms/{room}/send/m.room.message/nested", content)
    assert_error(response, 400, "M_UNKNOWN")
    assert (await relations(alice, room, reply))["chunk"] == []


async def test_malformed_relations_are_ordinary_events(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    for n, relates_to in enumerate(
        [{"rel_type": 5, "event_id": root}, {"rel_type": "m.reference"}, "not an object"]
    ):
        await send(alice, room, "m.room.message", {"body": f"odd {n}", "m.relates_to": relates_to})
    assert (await relations(alice, room, root))["chunk"] == []


# -- Aggregations ---------------------------------------------------------------------------


async def test_latest_edit_is_bundled_everywhere(alice: Client, bob: Client) -> None:
    room, root = await _room_with_root(alice, bob)
    edits = [await edit(alice, room, root, f"edit {n}") for n in range(3)]
    await edit(bob, room, root, "not the sender's edit")
    # Spec: the most recent by origin_server_ts wins, ties broken by the larger event id.
    served_edits = [assert_ok(await alice.get(f"/rooms/{room}/event/{e}")) for e in edits]
    newest = max(served_edits, key=lambda e: (e["origin_server_ts"], e["event_id"]))
    second = newest["event_id"]
    event = assert_ok(await alice.get(f"/rooms/{room}/event/{root}"))
    replace = bundled(event)["m.replace"]
    assert replace["event_id"] == second
    assert (
        replace["content"]["m.new_content"]["body"] == newest["content"]["m.new_content"]["body"]
    )
    # Spec v1.7: the original's content is left as it was.
    assert event["content"]["body"] == "root"
    page = await messages(alice, room, dir="b", limit=10)
    (served,) = [e for e in page["chunk"] if e["event_id"] == root]
    assert bundled(served)["m.replace"]["event_id"] == second
    context = assert_ok(await alice.get(f"/rooms/{room}/context/{root}", params={"limit": 2}))
    assert bundled(context["event"])["m.replace"]["event_id"] == second
    synced = assert_ok(await bob.get("/sync"))
    timeline = synced["rooms"]["join"][room]["timeline"]["events"]
    (in_sync,) = [e for e in timeline if e["event_id"] == root]
    assert bundled(in_sync)["m.replace"]["event_id"] == second
    # Edits themselves get no aggregations.
    (edit_event,) = [e for e in timeline if e["event_id"] == second]
    assert bundled(edit_event) == {}


async def test_references_are_bundled_and_annotations_are_not(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    first = await reference(alice, room, root, "one")
    second = await reference(alice, room, root, "two")
    assert_ok(await react(alice, room, root, "👍"))
    event = assert_ok(await alice.get(f"/rooms/{room}/event/{root}"))
    assert bundled(event) == {
        "m.reference": {"chunk": [{"event_id": first}, {"event_id": second}]}
    }


async def test_redaction_removes_relations(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    first_edit = await edit(alice, room, root, "first")
    second_edit = await edit(alice, room, root, "second")
    ref = await reference(alice, room, root, "ref")
    # Whichever edit wins (they may share a millisecond), redacting it leaves the other.
    winner = bundled(assert_ok(await alice.get(f"/rooms/{room}/event/{root}")))["m.replace"]
    if winner["event_id"] == first_edit:
        first_edit, second_edit = second_edit, first_edit
    assert_ok(await alice.put(f"/rooms/{room}/redact/{second_edit}/r1", {}))
    assert_ok(await alice.put(f"/rooms/{room}/redact/{ref}/r2", {}))
    event = assert_ok(await alice.get(f"/rooms/{room}/event/{root}"))
    assert bundled(event) == {"m.replace": bundled(event)["m.replace"]}
    assert bundled(event)["m.replace"]["event_id"] == first_edit
    assert ids((await relations(alice, room, root))["chunk"]) == [first_edit]
    # A redacted original gets no edit bundled.
    assert_ok(await alice.put(f"/rooms/{room}/redact/{root}/r3", {}))
    event = assert_ok(await alice.get(f"/rooms/{room}/event/{root}"))
    assert "m.replace" not in bundled(event)


async def test_event_fields_filter_keeps_the_bundled_event_whole(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    edited = await edit(alice, room, root, "edited")
    filt = '{"event_fields": ["event_id", "unsigned"], "types": ["m.room.message"]}'
    page = await messages(alice, room, dir="b", limit=5, filter=filt)
    (served,) = [e for e in page["chunk"] if e["event_id"] == root]
    assert set(served) == {"event_id", "unsigned"}
    assert bundled(served)["m.replace"]["event_id"] == edited
    assert bundled(served)["m.replace"]["content"]["body"] == "* edited"


async def test_concurrent_identical_reactions_store_one(alice: Client) -> None:
    room, root = await _room_with_root(alice)
    statuses: list[int] = []

    async def send_one() -> None:
        statuses.append((await react(alice, room, root, "🚀")).status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(send_one)
    assert sorted(statuses) == [200, 400, 400, 400]
    assert len((await relations(alice, room, root))["chunk"]) == 1


async def test_aggregations_survive_a_restart(tmp_path: Path) -> None:
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        user = await hs.register_user("nora", "pw")
        nora = Client(http, user.user_id, user.access_token, user.device_id)
        room, root = await _room_with_root(nora)
        edited = await edit(nora, room, root, "edited")
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        nora.http = http
        event = assert_ok(await nora.get(f"/rooms/{room}/event/{root}"))
        assert bundled(event)["m.replace"]["event_id"] == edited


async def test_a_departed_user_reads_relations_up_to_their_leave(
    alice: Client, bob: Client
) -> None:
    room, root = await _room_with_root(alice, bob)
    before = await reference(alice, room, root, "while bob was here")
    assert_ok(await bob.post(f"/rooms/{room}/leave", {}))
    await reference(alice, room, root, "after bob left")
    assert ids((await relations(bob, room, root))["chunk"]) == [before]
    assert ids((await relations(bob, room, root, dir="f"))["chunk"]) == [before]
