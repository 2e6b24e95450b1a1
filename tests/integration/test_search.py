"""POST /search over real HTTP (spec "Server Side Search"; Complement csapi/apidoc_search)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from trioserver.handlers import search as search_handler
from trioserver.testing import InProcessServer

from tests.integration.client import V3, Client, assert_error, assert_ok
from tests.integration.room_helpers import (
    create_room,
    invite,
    join,
    leave,
    messages,
    send_text,
    set_visibility,
)


async def search_raw(
    client: Client, term: Any, next_batch: str | None = None, **room_events: Any
) -> httpx.Response:
    body = {"search_categories": {"room_events": {"search_term": term, **room_events}}}
    params = {} if next_batch is None else {"next_batch": next_batch}
    return await client.post("/search", body, params=params)


async def search(
    client: Client, term: str, next_batch: str | None = None, **room_events: Any
) -> dict[str, Any]:
    """The ``room_events`` category of a search."""
    body = assert_ok(await search_raw(client, term, next_batch, **room_events))
    result: dict[str, Any] = body["search_categories"]["room_events"]
    return result


def found_ids(result: dict[str, Any]) -> list[str]:
    return [r["result"]["event_id"] for r in result["results"]]


async def test_finds_a_message_by_a_stemmed_word(alice: Client) -> None:
    room = await create_room(alice)
    event_id = await send_text(alice, room, "I like to run in the morning")
    await send_text(alice, room, "something else entirely")
    result = await search(alice, "running", keys=["content.body"])
    assert result["count"] == 1
    (hit,) = result["results"]
    assert hit["result"]["event_id"] == event_id
    assert hit["result"]["room_id"] == room
    assert hit["result"]["content"]["body"] == "I like to run in the morning"
    assert hit["result"]["sender"] == alice.user_id
    assert isinstance(hit["result"]["unsigned"]["age"], int)
    assert hit["result"]["unsigned"]["membership"] == "join"
    assert isinstance(hit["rank"], float)
    assert hit["rank"] > 0
    # The term's words and the words of the results that matched them.
    assert set(result["highlights"]) == {"running", "run"}
    assert "next_batch" not in result


async def test_words_match_as_prefixes_and_accents_fold(alice: Client) -> None:
    room = await create_room(alice)
    event_id = await send_text(alice, room, "Crème brûlée at the café")
    assert found_ids(await search(alice, "creme brul")) == [event_id]
    assert found_ids(await search(alice, "CAFE")) == [event_id]


async def test_query_syntax_phrases_negation_and_or(alice: Client) -> None:
    room = await create_room(alice)
    red_car = await send_text(alice, room, "the red car is fast")
    car_red = await send_text(alice, room, "a car painted red")
    blue = await send_text(alice, room, "the blue boat")
    assert set(found_ids(await search(alice, '"red car"'))) == {red_car}
    assert set(found_ids(await search(alice, "red car"))) == {red_car, car_red}
    assert set(found_ids(await search(alice, "car -fast"))) == {car_red}
    assert set(found_ids(await search(alice, "boat or fast"))) == {red_car, blue}
    # Only a negation: nothing can match, and that is not an error.
    assert (await search(alice, "-car"))["results"] == []


async def test_room_name_and_topic_keys(alice: Client) -> None:
    room = await create_room(alice, name="Project Kangaroo", topic="All about wombats")
    await send_text(alice, room, "kangaroo sighting")
    names = await search(alice, "kangaroo", keys=["content.name"])
    assert [r["result"]["type"] for r in names["results"]] == ["m.room.name"]
    topics = await search(alice, "wombats", keys=["content.topic"])
    assert [r["result"]["type"] for r in topics["results"]] == ["m.room.topic"]
    everything = await search(alice, "kangaroo")
    assert sorted(r["result"]["type"] for r in everything["results"]) == [
        "m.room.message",
        "m.room.name",
    ]
    assert everything["count"] == 2


async def test_rank_and_recent_order(alice: Client) -> None:
    room = await create_room(alice)
    strong = await send_text(alice, room, "apple apple")
    weak = await send_text(alice, room, "an apple a day keeps the doctor away, they say")
    by_rank = await search(alice, "apple")
    assert found_ids(by_rank) == [strong, weak]
    ranks = [r["rank"] for r in by_rank["results"]]
    assert ranks[0] > ranks[1]
    assert found_ids(await search(alice, "apple", order_by="recent")) == [weak, strong]


async def test_filter_rooms_senders_and_types(alice: Client, bob: Client) -> None:
    first = await create_room(alice, preset="public_chat", name="needle room")
    second = await create_room(alice, preset="public_chat")
    await join(bob, first)
    a1 = await send_text(alice, first, "needle one")
    b1 = await send_text(bob, first, "needle two")
    a2 = await send_text(alice, second, "needle three")

    async def ids(**filter_body: Any) -> set[str]:
        return set(found_ids(await search(alice, "needle", filter=filter_body)))

    assert await ids(rooms=[second]) == {a2}
    assert await ids(not_rooms=[first]) == {a2}
    assert await ids(senders=[bob.user_id]) == {b1}
    assert await ids(not_senders=[bob.user_id], types=["m.room.message"]) == {a1, a2}
    assert await ids(types=["m.room.n*"]) == {
        r["result"]["event_id"]
        for r in (await search(alice, "needle", keys=["content.name"]))["results"]
    }
    assert await ids(not_types=["m.room.*"]) == set()
    # The count honours the filter's senders and types (the room name is alice's too).
    counted = await search(alice, "needle", filter={"senders": [alice.user_id]})
    assert counted["count"] == 3
    counted = await search(alice, "needle", filter={"types": ["m.room.message"]})
    assert counted["count"] == 3
    # A long sender list (kept out of the SQL) still filters.
    many = [f"@{i}:x" for i in range(2_000)]
    assert await ids(senders=[*many, bob.user_id]) == {b1}
    assert await ids(not_senders=[*many, bob.user_id], types=["m.room.message"]) == {a1, a2}


@pytest.mark.parametrize("order", ["recent", "rank"])
async def test_pagination_has_no_duplicates_or_gaps(alice: Client, order: str) -> None:
    room = await create_room(alice)
    sent = [await send_text(alice, room, f"Message number {i}") for i in range(25)]
    seen: list[str] = []
    next_batch = None
    pages = 0
    while True:
        result = await search(alice, "message", next_batch, order_by=order, filter={"limit": 10})
        assert result["count"] == 25
        seen += found_ids(result)
        pages += 1
        next_batch = result.get("next_batch")
        if next_batch is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == set(sent)
    if order == "recent":
        assert seen == sent[::-1]


async def test_a_full_last_page_still_has_a_next_batch(alice: Client) -> None:
    # As Synapse (Complement "Can back-paginate search results"): 20 results in pages of 10.
    room = await create_room(alice)
    sent = [await send_text(alice, room, f"Message number {i}") for i in range(20)]
    args: dict[str, Any] = {"order_by": "recent", "filter": {"limit": 10, "rooms": [room]}}
    first = await search(alice, "Message", **args)
    assert found_ids(first) == sent[:9:-1]
    second = await search(alice, "Message", first["next_batch"], **args)
    assert found_ids(second) == sent[9::-1]
    third = await search(alice, "Message", second["next_batch"], **args)
    assert third["results"] == []
    assert third["count"] == 20
    assert "next_batch" not in third


async def test_event_context_with_profiles(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    assert_ok(await bob.put(f"/profile/{bob.user_id}/displayname", {"displayname": "Bobby"}))
    sent = []
    for i in range(1, 8):
        sender = bob if i % 2 else alice
        sent.append(await send_text(sender, room, f"Message number {i}"))
    result = await search(
        alice,
        "Message 4",
        order_by="recent",
        filter={"limit": 1},
        event_context={"before_limit": 2, "after_limit": 2, "include_profile": True},
    )
    assert result["count"] == 1
    (hit,) = result["results"]
    assert hit["result"]["content"]["body"] == "Message number 4"
    context = hit["context"]
    before = [e["content"]["body"] for e in context["events_before"]]
    after = [e["content"]["body"] for e in context["events_after"]]
    assert before == ["Message number 3", "Message number 2"]
    assert after == ["Message number 5", "Message number 6"]
    assert context["profile_info"] == {
        alice.user_id: {"displayname": "alice", "avatar_url": None},
        bob.user_id: {"displayname": "Bobby", "avatar_url": None},
    }
    # The tokens page on from either end of the context, as /context's do.
    later = await messages(alice, room, dir="f", **{"from": context["end"]})
    assert [e["event_id"] for e in later["chunk"]] == [sent[6]]
    earlier = await messages(alice, room, dir="b", limit=1, **{"from": context["start"]})
    assert [e["content"]["body"] for e in earlier["chunk"]] == ["Message number 1"]
    # Without event_context, no context (Synapse sends an empty object).
    plain = await search(alice, "Message 4", order_by="recent", filter={"limit": 1})
    assert plain["results"][0]["context"] == {}


async def test_include_state_and_groupings(alice: Client, bob: Client) -> None:
    first = await create_room(alice, preset="public_chat", name="First")
    second = await create_room(alice)
    await join(bob, first)
    a1 = await send_text(alice, first, "lunch today?")
    b1 = await send_text(bob, first, "lunch sounds good")
    a2 = await send_text(alice, second, "lunch notes")
    result = await search(
        alice,
        "lunch",
        include_state=True,
        groupings={"group_by": [{"key": "room_id"}, {"key": "sender"}]},
        order_by="recent",
    )
    assert set(result["state"]) == {first, second}
    names = [e for e in result["state"][first] if e["type"] == "m.room.name"]
    assert names[0]["content"] == {"name": "First"}
    rooms = result["groups"]["room_id"]
    assert rooms[first]["results"] == [b1, a1]
    assert rooms[second]["results"] == [a2]
    assert all(isinstance(g["order"], float) for g in rooms.values())
    senders = result["groups"]["sender"]
    assert senders[alice.user_id]["results"] == [a2, a1]
    assert senders[bob.user_id]["results"] == [b1]
    assert "state" not in await search(alice, "lunch")


async def test_a_room_groups_next_batch_pages_within_that_room(alice: Client) -> None:
    first = await create_room(alice)
    second = await create_room(alice)
    in_first = [await send_text(alice, first, f"pizza {i}") for i in range(3)]
    in_second = [await send_text(alice, second, f"pizza {i}") for i in range(3)]
    args: dict[str, Any] = {
        "order_by": "recent",
        "filter": {"limit": 2},
        "groupings": {"group_by": [{"key": "room_id"}]},
    }
    page = await search(alice, "pizza", **args)
    assert found_ids(page) == in_second[:0:-1]
    group_batch = page["groups"]["room_id"][second]["next_batch"]
    rest = await search(alice, "pizza", group_batch, **args)
    assert found_ids(rest) == [in_second[0]]
    # The global next_batch goes on across rooms.
    onwards = await search(alice, "pizza", page["next_batch"], **args)
    assert found_ids(onwards) == [in_second[0], in_first[2]]


async def test_other_users_rooms_are_never_searched(alice: Client, bob: Client) -> None:
    secret_room = await create_room(bob, preset="public_chat")
    await send_text(bob, secret_room, "the launch code is swordfish")
    mine = await create_room(alice)
    await send_text(alice, mine, "nothing to see")
    for body in (
        await search(alice, "swordfish"),
        await search(alice, "swordfish", filter={"rooms": [secret_room]}),
    ):
        assert body["results"] == []
        assert body["count"] == 0
    assert found_ids(await search(bob, "swordfish"))


async def test_left_rooms_are_not_searched(alice: Client, bob: Client) -> None:
    room = await create_room(bob, preset="public_chat")
    await join(alice, room)
    event_id = await send_text(bob, room, "quarterly report attached")
    assert found_ids(await search(alice, "quarterly")) == [event_id]
    await leave(alice, room)
    result = await search(alice, "quarterly")
    assert result["results"] == []
    assert result["count"] == 0


async def test_history_visibility_applies(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="private_chat")
    await set_visibility(alice, room, "joined")
    await send_text(alice, room, "before bob: the surprise party")
    await invite(alice, room, bob.user_id)
    await join(bob, room)
    after = await send_text(alice, room, "after bob: party at eight")
    result = await search(bob, "party")
    assert found_ids(result) == [after]


async def test_ignored_users_messages_are_dropped(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    mine = await send_text(alice, room, "banana bread recipe")
    await send_text(bob, room, "banana spam")
    ignore: dict[str, Any] = {"ignored_users": {bob.user_id: {}}}
    assert_ok(await alice.put(f"/user/{alice.user_id}/account_data/m.ignored_user_list", ignore))
    assert found_ids(await search(alice, "banana")) == [mine]


async def test_search_works_across_an_upgraded_room(alice: Client) -> None:
    # Complement "Search works across an upgraded room and its predecessor".
    room = await create_room(alice, preset="private_chat", room_version="8")
    before = await send_text(alice, room, "Message before upgrade")
    upgraded = assert_ok(await alice.post(f"/rooms/{room}/upgrade", {"new_version": "9"}))
    new_room = upgraded["replacement_room"]
    after = await send_text(alice, new_room, "Message after upgrade")
    result = await search(
        alice, "upgrade", keys=["content.body"], filter={"rooms": [room, new_room]}
    )
    assert result["count"] == 2
    assert found_ids(result) == [before, after]


async def test_no_category_and_no_matchable_words(alice: Client) -> None:
    assert assert_ok(await alice.post("/search", {"search_categories": {}})) == {
        "search_categories": {}
    }
    room = await create_room(alice)
    await send_text(alice, room, "hello")
    result = await search(alice, "!!! ??? ...")
    assert result == {"results": [], "count": 0, "highlights": []}
    nothing = await search(alice, "hello", filter={"limit": 0})
    assert nothing["results"] == []
    assert nothing["count"] == 1
    assert "next_batch" not in nothing


async def test_needs_authentication(hs: InProcessServer, http: httpx.AsyncClient) -> None:
    body = {"search_categories": {"room_events": {"search_term": "x"}}}
    response = await http.post(f"{V3}/search", json=body)
    assert_error(response, 401, "M_MISSING_TOKEN")


async def test_a_scan_stops_early_and_pages_on_past_invisible_hits(
    alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_handler, "MAX_EXAMINED", 5)
    room = await create_room(alice, preset="private_chat")
    await set_visibility(alice, room, "joined")
    for i in range(8):
        await send_text(alice, room, f"hidden zebra {i}")
    await invite(alice, room, bob.user_id)
    await join(bob, room)
    visible = await send_text(alice, room, "visible zebra")
    first = await search(bob, "zebra", order_by="recent")
    assert found_ids(first) == [visible]
    # Five hits examined: the page stops there and says where to go on from.
    second = await search(bob, "zebra", first["next_batch"], order_by="recent")
    assert second["results"] == []
    assert "next_batch" not in second
