"""The discovery node's extensions: started in order and stopped in reverse, fed only the typed messages of
their filters, and one that raises is logged with the farm and the topic, counted (metrics, health) and
isolated, while the others go on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from common.identities import IdentityStore
from contract.messages import DiscoveryStatus, FarmMessage, decode_message
from contract.payloads import Status, encode, utc_now
from contract.topics import FarmTopic, Topics
from discovery.extension import Extension, Extensions, Node
from discovery.metrics import Metrics
from discovery.settings import DiscoverySettings

TOPICS = Topics()
STATUS_TOPIC = TOPICS.status("farm-001")
STATE_TOPIC = TOPICS.state("farm-001")


class Recorder(Extension):
    name = "recorder"

    def __init__(self, journal: list[str], kind: FarmTopic = FarmTopic.STATUS) -> None:
        self.journal = journal
        self.kind = kind

    def filters(self) -> list[str]:
        return [TOPICS.all_farms(self.kind)]

    async def start(self) -> None:
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")

    async def on_message(self, message: FarmMessage[Any] | DiscoveryStatus) -> None:
        assert isinstance(message, FarmMessage) and isinstance(message.payload, Status)
        self.journal.append(f"{self.name} {message.farm_id} {message.payload.state}")


class StateRecorder(Recorder):
    name = "state-only"


class Broken(Recorder):
    name = "broken"

    async def start(self) -> None:
        raise RuntimeError("cannot open")

    async def on_message(self, message: FarmMessage[Any] | DiscoveryStatus) -> None:
        raise ValueError("a bug")

    async def commit(self) -> None:
        raise OSError("disk full")


def status(state: str = "online") -> tuple[str, Any]:
    return STATUS_TOPIC, decode_message(TOPICS, STATUS_TOPIC, encode(Status(state=state, ts=utc_now())))


async def test_extensions_start_in_order_stop_in_reverse_and_get_only_their_topics() -> None:
    journal: list[str] = []
    first, state_only = Recorder(journal), StateRecorder(journal, FarmTopic.STATE)
    extensions = Extensions([first, state_only])
    await extensions.start()
    await extensions.deliver(*status())
    await extensions.stop()
    assert journal == ["start recorder", "start state-only", "recorder farm-001 online", "stop state-only",
                       "stop recorder"]
    assert extensions.filters() == sorted([TOPICS.all_farms(FarmTopic.STATUS), TOPICS.all_farms(FarmTopic.STATE)])


async def test_an_extension_that_raises_is_logged_counted_and_isolated(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal: list[str] = []
    node = Node(DiscoverySettings(data_dir=tmp_path, tailscale_sync=False), TOPICS, utc_now,
                IdentityStore(tmp_path))
    node.extensions = extensions = Extensions([Broken(journal), Recorder(journal), Metrics(node)])
    await extensions.start()  # the broken one fails to start; the others start
    await extensions.deliver(*status("online"))
    await extensions.deliver(*status("offline"))
    assert not await extensions.commit()  # its commit failed: the bus must not acknowledge
    assert journal == ["start recorder", "recorder farm-001 online", "recorder farm-001 offline"]
    assert extensions.failures == {"broken": 4}
    assert f"extension broken failed on a message of farm farm-001 on {STATUS_TOPIC}" in caplog.text
    assert any(record.levelno == logging.ERROR and record.exc_info for record in caplog.records)
    scraped = (await node.extensions.get(Metrics).scrape()).decode()  # type: ignore[union-attr]
    assert 'kubmesh_extension_failures_total{extension="broken"} 4.0' in scraped
    assert 'kubmesh_extension_failures_total{extension="recorder"} 0.0' in scraped
