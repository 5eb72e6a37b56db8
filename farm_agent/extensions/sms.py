"""``sms``: the farm texts its farmer through its own GSM modem when monitoring is cut off (:mod:`farm_agent.sms`).

On only with ``sms.device``; python-gammu is loaded then and only then. The extension feeds the
notifier what the agent sees — the broker session, the discovery node's retained status, the
controller's active alarms and whether it answers — and publishes each SMS sent as an ``sms_sent``
event once monitoring hears the farm again. The modem shows under ``sms`` in ``/health`` and the
heartbeat, which is sent again at once when the modem is found, lost, or has texted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from contract.messages import DiscoveryStatus, MessageError, decode_message
from contract.payloads import encode
from farm_agent.agent import FarmAgent
from farm_agent.extension import Extension, HealthChange, Inbound, Polled
from farm_agent.settings import AgentSettings
from farm_agent.sms.modem import make_modem
from farm_agent.sms.notifier import SentSms, SmsNotifier
from farm_agent.sms.policy import SmsPolicy


class Sms(Extension):
    name = "sms"

    def __init__(self, agent: FarmAgent) -> None:
        super().__init__(agent)
        settings = agent.settings
        assert settings.sms_device is not None  # enabled() said so
        policy = SmsPolicy(settings.farm_name or agent.farm_id, after=settings.sms_after,
                           max_per_hour=settings.sms_max_per_hour,
                           language="en" if settings.sms_language == "en" else "ru",
                           group_window=settings.sms_group_window, clock=agent.clock)
        self.notifier = SmsNotifier(policy, make_modem(settings.sms_device, settings.sms_connection),
                                    settings.sms_numbers, self._report, farm_id=agent.farm_id,
                                    changed=self._tell_health, check_every=settings.sms_check_interval)

    @classmethod
    def enabled(cls, settings: AgentSettings) -> bool:
        return settings.sms_device is not None

    def subscriptions(self) -> Sequence[str]:
        return (self.agent.topics.discovery_status(),)

    def status(self) -> Mapping[str, BaseModel]:
        return {"sms": self.notifier.health}

    async def start(self) -> None:
        self.spawn(self.notifier.run(), "notifier")

    async def on_connected(self) -> None:
        self.notifier.link(True)

    async def on_disconnected(self) -> None:
        self.notifier.link(False)

    async def on_message(self, message: Inbound) -> None:
        if not message.payload:  # the retained status cleared: nothing is known of the node
            self.notifier.discovery(None)
            return
        try:
            decoded = decode_message(self.agent.topics, message.topic, message.payload, message.retained)
        except MessageError:
            return
        if isinstance(decoded, DiscoveryStatus):
            self.notifier.discovery(decoded.online)

    async def on_poll(self, poll: Polled) -> None:
        self.notifier.alarms([alarm.label for alarm in poll.alarms.active])

    async def on_health(self, change: HealthChange) -> None:
        if change.part == "modbus":
            self.notifier.controller(change.ok)

    async def _report(self, sms: SentSms) -> bool:
        return await self.agent.publisher.publish(self.agent.topics.events(self.agent.farm_id), encode(sms.event()))

    def _tell_health(self) -> None:
        self.agent.publisher.soon(self.agent.publish_heartbeat())
