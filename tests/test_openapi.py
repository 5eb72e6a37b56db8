"""``/openapi.json``: a valid OpenAPI 3 document that names every route of the discovery API, and whose
schemas the live node's answers fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec

from common.identities import IdentityStore, Role
from contract.payloads import Reading, Status, encode, utc_now
from contract.topics import Topics
from discovery.api import create_api, openapi_document
from discovery.audit import CommandAudit
from discovery.history import HistoryRecorder
from discovery.registry import Registry
from tests.helpers import wait_until
from tests.test_discovery import FARM, Discovery, discovery, farm_client, meta, publish  # noqa: F401 - fixture


def test_the_document_is_valid_openapi_3_and_names_every_route(tmp_path: Path) -> None:
    document = openapi_document()
    validate_spec(document)
    async def scrape() -> bytes:
        return b""

    app = create_api(Registry(tmp_path / "d.db"), CommandAudit(tmp_path / "d.db", Topics(), utc_now), "token",
                     dict, HistoryRecorder(tmp_path / "h.db", Topics(), utc_now), IdentityStore(tmp_path),
                     metrics=scrape)
    routes = {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}
    assert routes == set(document["paths"])


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
        OAS30Validator(resolved(schema, document)).validate(body)
    for url, status in ((f"/api/farms/{FARM}/history?name=temp_inside&step=0", 400), ("/api/farms/nobody", 404)):
        got, body = discovery.get(url)
        assert got == status
        schema = document["paths"][url.split("?")[0].replace("nobody", "{farm}").replace(FARM, "{farm}")]
        error = schema["get"]["responses"][str(status)]
        OAS30Validator(resolved(error, document)["content"]["application/json"]["schema"]).validate(body)
