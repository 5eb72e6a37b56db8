"""Which tailnet device is which farm, and what is wrong with it.

A device is a farm's when its MagicDNS short name or its hostname is the farm
id (enrol farms with ``tailscale up --hostname FARM_ID``). A farm's device is
flagged ``offline`` (not connected to the control plane), ``key_expiring`` or
``key_expired`` (node key, unless expiry is disabled — tagged devices have it
disabled by default), ``untagged`` (missing ``tag:farm``); a device tagged
``tag:farm`` that is no known farm is ``unknown_farm``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from common.tailscale.models import Device, LocalStatus
from contract.payloads import format_ts

FARM_TAG = "tag:farm"


def farm_of(device: Device, farm_ids: set[str]) -> str | None:
    for candidate in (device.short_name.lower(), device.hostname.lower()):
        if candidate in farm_ids:
            return candidate
    return None


def flags(device: Device, farm_id: str | None, now: datetime, expiry_warning: timedelta) -> list[str]:
    found: list[str] = []
    if farm_id is None:
        return ["unknown_farm"] if FARM_TAG in device.tags else []
    if device.connected_to_control is False:
        found.append("offline")
    if device.expires is not None and not device.key_expiry_disabled:
        if device.expires <= now:
            found.append("key_expired")
        elif device.expires - now <= expiry_warning:
            found.append("key_expiring")
    if FARM_TAG not in device.tags:
        found.append("untagged")
    return found


def device_records(
    devices: Iterable[Device], farm_ids: set[str], now: datetime, expiry_warning: timedelta
) -> list[dict[str, Any]]:
    records = []
    for device in devices:
        farm_id = farm_of(device, farm_ids)
        records.append({
            "id": device.id,
            "name": device.name,
            "hostname": device.hostname,
            "addresses": device.addresses,
            "os": device.os,
            "user": device.user,
            "online": device.connected_to_control,
            "last_seen": _ts(device.last_seen),
            "expires": _ts(device.expires),
            "key_expiry_disabled": device.key_expiry_disabled,
            "tags": device.tags,
            "farm_id": farm_id,
            "flags": flags(device, farm_id, now, expiry_warning),
        })
    return records


def farms_summary(records: list[dict[str, Any]], farm_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Per known farm: its device and flags; a farm with no device on the tailnet is ``no_device``."""
    summary: dict[str, dict[str, Any]] = {farm: {"device": None, "flags": ["no_device"]} for farm in sorted(farm_ids)}
    for record in records:
        if record["farm_id"] is not None:
            summary[record["farm_id"]] = {"device": record["id"], "flags": record["flags"]}
    return summary


def devices_from_local(status: LocalStatus) -> list[Device]:
    """Without an API key the node still knows the peers its daemon sees (and itself)."""
    peers = list(status.peer.values()) + ([status.self_] if status.self_ else [])
    return [
        Device.model_validate({
            "id": peer.id or peer.host_name, "name": peer.dns_name.rstrip("."), "hostname": peer.host_name,
            "addresses": peer.tailscale_ips, "os": peer.os,
            "connectedToControl": True if peer is status.self_ else peer.online,
            "lastSeen": peer.last_seen, "expires": peer.key_expiry, "keyExpiryDisabled": peer.key_expiry is None,
            "tags": peer.tags,
        })
        for peer in peers
    ]


def _ts(moment: datetime | None) -> str | None:
    return format_ts(moment) if moment else None
