"""The shapes we read from Tailscale: API v2 devices and auth keys, and ``tailscale status --json``.

Only the fields kubmesh uses are declared; the rest of each record is ignored,
so newer Tailscale versions adding fields change nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _optional_time(value: object) -> object:
    """The API sends empty strings or the zero time where a moment is unknown."""
    if value in ("", None) or (isinstance(value, str) and value.startswith("0001-01-01")):
        return None
    return value


# Tailscale sends null where a list or map is empty, and "" or the zero time where a moment is unknown
Strings = Annotated[list[str], BeforeValidator(lambda value: value or [])]
Moment = Annotated[datetime | None, BeforeValidator(_optional_time)]


class Device(_Lenient):
    """One device of ``GET /tailnet/{tailnet}/devices``."""

    id: str
    node_id: str | None = Field(None, alias="nodeId")
    name: str = ""  # MagicDNS name, host.tailnet.ts.net
    hostname: str = ""
    addresses: Strings = Field(default_factory=list)
    user: str | None = None
    os: str | None = None
    client_version: str | None = Field(None, alias="clientVersion")
    last_seen: Moment = Field(None, alias="lastSeen")
    connected_to_control: bool | None = Field(None, alias="connectedToControl")
    expires: Moment = None
    key_expiry_disabled: bool = Field(False, alias="keyExpiryDisabled")
    authorized: bool = True
    tags: Strings = Field(default_factory=list)



    @property
    def short_name(self) -> str:
        """The first label of the MagicDNS name (what other nodes resolve), else the OS hostname."""
        return self.name.split(".", 1)[0] if self.name else self.hostname


class AuthKey(_Lenient):
    id: str
    key: str
    created: Moment = None
    expires: Moment = None



class PeerStatus(_Lenient):
    """A peer record of ``tailscale status --json`` (``Self`` has the same shape)."""

    id: str = Field("", alias="ID")
    host_name: str = Field("", alias="HostName")
    dns_name: str = Field("", alias="DNSName")
    os: str = Field("", alias="OS")
    tailscale_ips: Strings = Field(default_factory=list, alias="TailscaleIPs")
    tags: Strings = Field(default_factory=list, alias="Tags")
    online: bool = Field(False, alias="Online")
    last_seen: Moment = Field(None, alias="LastSeen")
    key_expiry: Moment = Field(None, alias="KeyExpiry")




class TailnetInfo(_Lenient):
    name: str = Field("", alias="Name")
    magic_dns_suffix: str = Field("", alias="MagicDNSSuffix")


class LocalStatus(_Lenient):
    """``tailscale status --json``: the node itself and the peers it sees."""

    version: str = Field("", alias="Version")
    backend_state: str = Field("", alias="BackendState")
    tailscale_ips: Strings = Field(default_factory=list, alias="TailscaleIPs")
    self_: PeerStatus | None = Field(None, alias="Self")
    current_tailnet: TailnetInfo | None = Field(None, alias="CurrentTailnet")
    peer: Annotated[dict[str, PeerStatus], BeforeValidator(lambda value: value or {})] = Field(
        default_factory=dict, alias="Peer")



    @property
    def running(self) -> bool:
        return self.backend_state == "Running"


class PeerWhoIsNode(_Lenient):
    name: str = Field("", alias="Name")
    tags: Strings = Field(default_factory=list, alias="Tags")
    addresses: Strings = Field(default_factory=list, alias="Addresses")



class UserProfile(_Lenient):
    login_name: str = Field("", alias="LoginName")
    display_name: str = Field("", alias="DisplayName")


class WhoIs(_Lenient):
    """``tailscale whois --json ADDR``: the node and the person behind an address."""

    node: PeerWhoIsNode = Field(alias="Node")
    user_profile: UserProfile | None = Field(None, alias="UserProfile")
