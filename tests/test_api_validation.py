"""Every parameter of every route of a real discovery node is validated into a 400 with a reason: the inputs
that answered 500, and the API fuzzed from its own OpenAPI document (schemathesis), answering no 5xx and
only what the document says."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from common.identities import Role
from contract.payloads import Reading, Status, encode, utc_now
from contract.topics import FARM_ID_PATTERN
from tests.helpers import wait_until
from tests.test_discovery import FARM, TOKEN, Discovery, farm_client, publish, start_discovery

FUZZ_EXAMPLES = 50  # per route and generation mode: a bounded run, well under a minute


@pytest.fixture
def node(tmp_path: Path, data_dir: Path) -> Iterator[Discovery]:
    """A discovery node that knows FARM, with a reading in its history."""
    node = start_discovery(tmp_path, data_dir)
    client = farm_client(node.mqtt_port, node.store.add(FARM, Role.FARM))
    try:
        publish(client, "status", encode(Status(state="online", ts=utc_now())))
        publish(client, "state", encode(Reading(ts=utc_now(), seq=1, values={"temp_inside": 21.5})))
        wait_until(lambda: node.get(f"/api/farms/{FARM}")[1].get("history", {}).get("readings") == 1, 10,
                   what="a reading stored")
    finally:
        client.loop_stop()
    yield node
    node.process.stop()


@pytest.mark.parametrize("query", [
    {"name": "temp_inside", "to": "9999-12-31T23:59:59-14:00"},  # exists, but not in UTC
    {"name": "temp_inside", "from": "0001-01-01T00:00:00+14:00"},
    {"name": "temp_inside", "to": "0001-01-01T00:00:00Z"},  # the default span of a day would start before year 1
    {"name": "temp_inside", "step": "9" * 400},
])
def test_history_times_that_do_not_exist_in_utc_answer_400_with_a_reason(node: Discovery,
                                                                          query: dict[str, str]) -> None:
    status, body = node.get(f"/api/farms/{FARM}/history?{urllib.parse.urlencode(query)}")
    assert status == 400 and body["error"] == "invalid history query" and body["detail"], body


@pytest.mark.parametrize("limit", ["\u0663", "\u00b2", "\uff15", "1\u200b", " 5", "1e3", "0x10", "1001", "0"])
def test_a_limit_that_is_not_ascii_digits_from_1_to_1000_answers_400(node: Discovery, limit: str) -> None:
    status, body = node.get(f"/api/farms/{FARM}/commands?limit={urllib.parse.quote(limit)}")
    assert status == 400 and body["error"] == "invalid limit" and body["detail"], body


def test_valid_and_empty_parameters_still_answer(node: Discovery) -> None:
    assert node.get(f"/api/farms/{FARM}/commands?limit=1000")[0] == 200
    assert node.get(f"/api/farms/{FARM}/commands?limit=")[0] == 200  # empty: the default
    status, body = node.get(f"/api/farms/{FARM}/history?name=temp_inside&from=&to=&step=")
    assert status == 200 and [p["value"] for p in body["points"]] == [21.5]


def any_text_for(parameter: dict[str, Any]) -> SearchStrategy[str]:
    """Text of every kind for a query parameter, with more of what its schema declares: digits of every
    script for a number, times at the ends of the calendar with every offset for a time."""
    schema = parameter.get("schema", {})
    anything = st.text(max_size=40)
    if schema.get("type") == "integer":
        digits = st.one_of(st.characters(categories=["Nd"]), st.characters(categories=["No"]),
                           st.sampled_from("0123456789"))
        return st.one_of(anything, st.lists(digits, min_size=1, max_size=5).map("".join))
    if schema.get("format") == "date-time":
        ends = st.sampled_from([datetime(1, 1, 1), datetime(1, 1, 1, 23, 59), datetime(9999, 12, 31),
                                datetime(9999, 12, 31, 23, 59, 59)])
        moments = st.one_of(ends, st.datetimes(min_value=datetime(1, 1, 1)))
        offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
        return st.one_of(anything, st.builds(lambda m, tz: m.replace(tzinfo=tz).isoformat(), moments, offsets))
    if "pattern" in schema:
        return st.one_of(anything, st.from_regex(schema["pattern"]))
    return anything


def get_any(node: Discovery, path: str) -> tuple[int, Any]:
    """``node.get``, for a route that may answer CSV: its body is JSON only when it is an error."""
    request = urllib.request.Request(f"http://127.0.0.1:{node.api_port}{path}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
            return response.status, json.loads(body) if response.headers.get_content_type() == "application/json" \
                else body
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_query_parameter_of_every_route_given_any_text_answers_200_or_400(node: Discovery,
                                                                              data: st.DataObject) -> None:
    document = node.get("/openapi.json")[1]
    with_queries = {path: [p for p in item["get"].get("parameters", []) if p.get("in") == "query"]
                    for path, item in document["paths"].items() if path.startswith("/api/farms")}
    path = data.draw(st.sampled_from(sorted(path for path, queries in with_queries.items() if queries)))
    declared = with_queries[path]
    query = {p["name"]: data.draw(any_text_for(p), label=p["name"]) for p in declared
             if p.get("required") or data.draw(st.booleans())}
    status, body = get_any(node, path.replace("{farm}", FARM) + "?" + urllib.parse.urlencode(query))
    assert status in (200, 400), (query, status, body)
    assert status == 200 or (body["error"].startswith("invalid") and body["detail"]), body


def test_the_api_fuzzed_from_its_own_document_answers_no_5xx_and_as_documented(node: Discovery) -> None:
    # schemathesis drives hypothesis directly: its pytest plug-in (from_fixture) does not run on pytest 9
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{node.api_port}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    fuzzed = {operation.path for operation in operations}
    assert fuzzed >= {path for path in schema.raw_schema["paths"] if path.startswith("/api/")}, fuzzed
    for operation in operations:
        takes_parameters = bool(schema.raw_schema["paths"][operation.path][operation.method.lower()].get("parameters"))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_parameters else (
                GenerationMode.POSITIVE,):
            check_operation(operation.as_strategy(generation_mode=mode))


def check_operation(cases: SearchStrategy[schemathesis.Case]) -> None:
    @given(case=cases)
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def answers_as_documented(case: schemathesis.Case) -> None:
        farm = (case.path_parameters or {}).get("farm")
        if isinstance(farm, str) and FARM_ID_PATTERN.fullmatch(farm):
            case.path_parameters["farm"] = FARM  # a well-formed id: ask the farm that exists, to reach the queries
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10, checks=[
            not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance])

    answers_as_documented()
