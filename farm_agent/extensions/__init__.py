"""The agent's extensions, in the order they are told what happened (events before the heartbeat that follows).

Adding a feature is a module here with an :class:`~farm_agent.extension.Extension` and one line below.
"""

from __future__ import annotations

from farm_agent.extension import Extension
from farm_agent.extensions.commands import Commands
from farm_agent.extensions.events import Events
from farm_agent.extensions.heartbeat import Heartbeats
from farm_agent.extensions.home_assistant import HomeAssistant
from farm_agent.extensions.metrics import Metrics
from farm_agent.extensions.primary_host import PrimaryHost
from farm_agent.extensions.sms import Sms

EXTENSIONS: tuple[type[Extension], ...] = (
    PrimaryHost,  # first: the reporter knows the session ended before the others are told
    Events,
    Heartbeats,
    HomeAssistant,
    Commands,
    Metrics,
    Sms,
)
