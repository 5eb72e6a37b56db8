"""Who is told about a farm, through which of their channels: the users of the identity store, each
seeing only their owner's farms (admins and users without an owner see every farm), each channel with
the lowest severity it wants and its tier, each user with a language and quiet hours."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time

from common.identities import Identity, Role
from discovery.alerting.compose import Reader
from discovery.alerting.engine import Alert
from discovery.alerting.kinds import Severity
from discovery.alerting.store import Channel, Recipient


@dataclass(frozen=True)
class Contact:
    """A user who may see the farm, with their channels of one tier."""

    recipient: Recipient
    channels: tuple[Channel, ...]

    @property
    def reader(self) -> Reader:
        return Reader(self.recipient.language, self.recipient.timezone)


@dataclass(frozen=True)
class Directory:
    """A snapshot of recipients, channels and identities, read once per burst."""

    channels: tuple[Channel, ...] = ()
    recipients: dict[str, Recipient] = field(default_factory=dict)
    identities: dict[str, Identity] = field(default_factory=dict)

    def contacts(self, farm_owner: str | None, tier: int) -> list[Contact]:
        by_user: dict[str, list[Channel]] = {}
        for channel in self.channels:
            if channel.tier == tier and may_see(self.identities.get(channel.username), farm_owner):
                by_user.setdefault(channel.username, []).append(channel)
        return [Contact(self.recipients.get(user, Recipient(user)), tuple(channels))
                for user, channels in sorted(by_user.items())]


def may_see(identity: Identity | None, farm_owner: str | None) -> bool:
    if identity is None or not identity.role.is_person:
        return False
    return identity.role is Role.ADMIN or identity.owner is None or identity.owner == farm_owner


def wanted(alerts: Iterable[Alert], channel: Channel) -> list[Alert]:
    """The alerts at or above the channel's lowest severity."""
    return [alert for alert in alerts if alert.severity.rank >= channel.severity.rank]


def in_quiet_hours(recipient: Recipient, now: datetime, local: Callable[[datetime], datetime]) -> bool:
    """Whether ``now`` falls in the user's quiet hours (a span may cross midnight: 22:00-06:00)."""
    if not recipient.quiet_start or not recipient.quiet_end:
        return False
    start, end = time.fromisoformat(recipient.quiet_start), time.fromisoformat(recipient.quiet_end)
    moment = local(now).time()
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end


def loud(alerts: Iterable[Alert]) -> list[Alert]:
    """What still goes during quiet hours: critical alerts only; warnings wait for the next reminder."""
    return [alert for alert in alerts if alert.severity is Severity.CRITICAL]
