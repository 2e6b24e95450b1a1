"""`RouteTable` finds the same route as trying every pattern in order, for every route;
`parse_query` reads a query string as the stdlib does."""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import parse_qs

import pytest

from trioserver.api.app import ROUTE_TABLES
from trioserver.api.http import Route, RouteTable, parse_query

ALL_ROUTES: list[Route[Any]] = [route for table in ROUTE_TABLES for route in table]
_GROUP = re.compile(r"\(\?P<\w+>(\[\^/\]\+|\.\*|\[\^/\]\*)\)|\(\?:([^()]*)\)")
# What a parameter is filled with: one segment, several segments, or an empty segment.
_FILLERS = {"[^/]+": ["x", "send"], ".*": ["", "a/b/c", "sync"], "[^/]*": ["", "versions"]}


def sample_paths(route: Route[Any]) -> list[str]:
    """Paths the route's pattern matches, each way its groups can be filled."""
    source = route.pattern.pattern.removeprefix("^").removesuffix(r"\Z")
    pieces: list[list[str]] = []
    position = 0
    for group in _GROUP.finditer(source):
        pieces.append([source[position : group.start()]])
        if group.group(1) is not None:
            pieces.append(_FILLERS[group.group(1)])
        else:
            pieces.append(group.group(2).split("|"))
        position = group.end()
    pieces.append([source[position:]])
    paths = ["".join(choice) for choice in itertools.product(*pieces)]
    return [path for path in paths if route.pattern.match(path)]


def linear_match(method: str, path: str) -> Route[Any] | None:
    for candidate in ALL_ROUTES:
        if candidate.pattern.match(path) and (
            candidate.method == method or (method == "HEAD" and candidate.method == "GET")
        ):
            return candidate
    return None


def table_match(table: RouteTable[Any], method: str, path: str) -> Route[Any] | None:
    for candidate in table.candidates(path):
        if candidate.pattern.match(path) and (
            candidate.method == method or (method == "HEAD" and candidate.method == "GET")
        ):
            return candidate
    return None


def test_every_route_yields_sample_paths() -> None:
    # Guards the generator below: a route it could not fill would go untested.
    assert all(sample_paths(route) for route in ALL_ROUTES)


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"])
def test_table_matches_what_a_full_scan_matches(method: str) -> None:
    table = RouteTable(ALL_ROUTES)
    paths = {path for route in ALL_ROUTES for path in sample_paths(route)}
    # Near misses: trailing slashes, an extra or a missing segment, unknown endpoints.
    paths |= {path + "/" for path in list(paths)} | {path + "/x" for path in list(paths)}
    paths |= {path.rsplit("/", 1)[0] for path in list(paths)}
    paths |= {"", "/", "/_matrix", "/_matrix/client/v3/nonexistent", "//"}
    for path in sorted(paths):
        assert table_match(table, method, path) is linear_match(method, path), path


@pytest.mark.parametrize(
    "query",
    [
        "",
        "a=1",
        "a=1&a=2&b=",
        "flag&&x=%7B%22room%22%3A1%7D&y=a+b%2Bc",
        "filter=" + "%7B%22x%22%3A1%7D" * 400,  # longer than the cached values
        "%E2%9C%93=%E2%9C%93&caf\u00e9=%ZZ&=empty",
    ],
)
def test_parse_query_agrees_with_the_stdlib(query: str) -> None:
    assert parse_query(query) == parse_qs(query, keep_blank_values=True)
