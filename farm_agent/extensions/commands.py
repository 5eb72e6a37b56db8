"""Commands on ``set/{name}``: each executed by :class:`~farm_agent.control.CommandHandler`, answered on ``ack``,
an applied one told on ``events`` and followed by a poll, so that its effect shows at once (settings read back
included)."""

from __future__ import annotations

from collections.abc import Sequence

from contract.payloads import Event, encode
from farm_agent.control import CommandHandler
from farm_agent.extension import Extension, Inbound


class Commands(Extension):
    name = "commands"

    _handler: CommandHandler | None = None

    def subscriptions(self) -> Sequence[str]:
        return (self.agent.topics.set_filter(self.agent.farm_id),)

    async def start(self) -> None:
        agent = self.agent
        self._handler = CommandHandler(
            agent.profile, agent.poller.link,
            agent.settings.data_dir / f"agent-{agent.farm_id}.commands.db",
            clock=agent.clock, max_age_s=agent.settings.command_max_age,
        )

    async def stop(self) -> None:
        await super().stop()
        if self._handler is not None:
            self._handler.close()

    async def on_message(self, message: Inbound) -> None:
        assert self._handler is not None  # started before any message
        agent = self.agent
        try:
            name: str | None = agent.topics.parse(message.topic).name
        except ValueError:
            name = message.topic.rsplit("/", 1)[-1]
        result = await self._handler.handle(name, message.payload, retained=message.retained)
        await agent.publisher.publish(agent.topics.ack(agent.farm_id), encode(result.ack))
        if name in agent.profile.writable_by_name:
            agent.poller.refresh_settings()  # applied or refused, the state says what the device now holds
        if result.applied:
            ack = result.ack
            await agent.publish_event(Event(
                ts=ack.ts, kind="command_applied", message=f"{ack.name} = {ack.value}",
                detail={"id": ack.id, "name": ack.name, "value": ack.value},
            ))
            agent.poll_now()
