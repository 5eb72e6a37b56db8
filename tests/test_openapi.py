"""``/openapi.json``: a valid OpenAPI 3.1 document that names every route of the discovery API, whose answer
schemas are the models of contract/rest.py, and whose schemas the live node's answers fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import ValidationError
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from common.identities import IdentityStore, Role
from contract.payloads import Reading, Status, encode, utc_now
from contract.rest import History, rest_schemas
from contract.topics import Topics
from discovery.alerting.api import add_alert_routes
from discovery.alerting.channels import Channels
from discovery.alerting.engine import Timing
from discovery.alerting.rules import load_rules
from discovery.alerting.service import AlertingConfig, AlertingService
from discovery.alerting.store import AlertStore
from discovery.api import OPENAPI_FILE, create_api, openapi_document
from discovery.audit import CommandAudit
from discovery.history import HistoryRecorder
from discovery.registry import Registry
from discovery.sqlite import SqliteStorage
from tests.helpers import wait_until
from tests.test_discovery import FARM, Discovery, discovery, farm_client, meta, publish  # noqa: F401 - fixture


def test_the_document_is_valid_openapi_3_and_names_every_route(tmp_path: Path) -> None:
    document = openapi_document()
    validate_spec(document)
    async def scrape() -> bytes:
        return b""

    storage = SqliteStorage(tmp_path / "discovery.db")
    app = create_api(Registry(storage.database("discovery.db", "")),
                     CommandAudit(storage.database("commands.db", ""), Topics(), utc_now), "token",
                     dict, HistoryRecorder(storage.history(), Topics(), utc_now), IdentityStore(tmp_path),
                     metrics=scrape)
    alerts = AlertStore(storage.database("alerts.db", ""))
    add_alert_routes(app, AlertingService(AlertingConfig(Timing(), 120, load_rules()), alerts, IdentityStore(tmp_path),
                                          Topics(), Channels(None), utc_now))
    routes = {(r.resource.canonical, r.method.lower()) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    assert routes == {(path, method) for path, item in document["paths"].items() for method in item}


def references(node: Any) -> set[str]:
    if isinstance(node, dict):
        return ({node["$ref"]} if "$ref" in node else set()).union(*(references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(references(item) for item in node))
    return set()


def test_the_answer_schemas_are_the_contracts_models_and_every_reference_resolves() -> None:
    document = openapi_document()
    assert document["components"]["schemas"] == rest_schemas()
    on_disk = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
    assert "schemas" not in on_disk["components"]  # one model: the file never holds a second copy
    for reference in references(document):
        target: Any = document
        for part in reference.removeprefix("#/").split("/"):
            assert part in target, f"{reference} names nothing in the document"
            target = target[part]


def test_a_history_answer_that_breaks_its_model_is_refused_by_its_schema() -> None:
    schema = {**rest_schemas()["History"], "components": {"schemas": rest_schemas()}}
    good = History.model_validate({"farm": FARM, "name": "temp_inside", "from": utc_now(), "to": utc_now(),
                                   "points": [{"ts": utc_now(), "value": 21.5}]})
    OAS31Validator(schema).validate(json.loads(good.model_dump_json(by_alias=True, exclude_unset=True)))
    with pytest.raises(ValidationError):
        OAS31Validator(schema).validate({"farm": FARM, "name": "temp_inside", "points": [{"value": "warm"}]})


def resolved(node: Any, document: dict[str, Any]) -> Any:
    """The schema with every ``$ref`` replaced by what it points at."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolved(target, document)
        return {key: resolved(value, document) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(item, document) for item in node]
    return node


def test_the_live_answers_fit_the_documented_schemas(discovery: Discovery) -> None:  # noqa: F811
    status, document = discovery.get("/openapi.json", token=None)  # open, like /health
    assert status == 200 and document == openapi_document()
    client = farm_client(discovery.mqtt_port, discovery.store.add(FARM, Role.FARM, owner="owner-a"))
    try:
        publish(client, "status", encode(Status(state="online", ts=utc_now())))
        publish(client, "meta", meta())
        publish(client, "state", encode(Reading(ts=utc_now(), seq=1, values={"temp_inside": 21.5})))
        wait_until(lambda: discovery.get(f"/api/farms/{FARM}/history?name=temp_inside")[1]["points"], 10,
                   what="a reading in the history")
    finally:
        client.loop_stop()
    asked = {
        "/health": "/health",
        "/api/farms": "/api/farms",
        "/api/farms/{farm}": f"/api/farms/{FARM}",
        "/api/farms/{farm}/history": f"/api/farms/{FARM}/history?name=temp_inside&step=1h",
        "/api/farms/{farm}/commands": f"/api/farms/{FARM}/commands",
        "/api/tailnet/devices": "/api/tailnet/devices",
        "/openapi.json": "/openapi.json",
    }
    for path, url in asked.items():
        status, body = discovery.get(url)
        schema = document["paths"][path]["get"]["responses"][str(status)]["content"]["application/json"]["schema"]
        OAS31Validator(resolved(schema, document)).validate(body)
    for url, status in ((f"/api/farms/{FARM}/history?name=temp_inside&step=0", 400), ("/api/farms/nobody", 404)):
        got, body = discovery.get(url)
        assert got == status
        schema = document["paths"][url.split("?")[0].replace("nobody", "{farm}").replace(FARM, "{farm}")]
        error = schema["get"]["responses"][str(status)]
        OAS31Validator(resolved(error, document)["content"]["application/json"]["schema"]).validate(body)
