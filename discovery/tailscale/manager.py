"""TailscaleManager: keeps the discovery node's picture of the tailnet up to date.

Every ``sync_interval`` seconds (300 by default) it reads the local daemon
(``tailscale status --json``) and, with ``TAILSCALE_API_KEY``, the tailnet's
devices from the API v2; without a key the daemon's peers stand in for the
device list. Devices are matched to the farms the node knows and stored. A
failed sync (refused key, rate limit, timeout, missing CLI) is recorded for
``/health`` and tried again with backoff; it never stops the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.identities import IdentityStore, Role, StoreError
from common.tailscale.local import TailscaleCli, TailscaleCliError
from common.tailscale.models import Device, LocalStatus
from contract.payloads import Clock, format_ts
from discovery.registry import Registry
from discovery.settings import DiscoverySettings
from discovery.tailscale.api import (
    TailscaleApi,
    TailscaleApiError,
    TailscaleAuthError,
    TailscaleRateLimited,
    TailscaleUnreachable,
)
from discovery.tailscale.matching import device_records, devices_from_local, farms_summary
from discovery.tailscale.store import TailnetStore

log = logging.getLogger("kubmesh.discovery.tailnet")


@dataclass
class SyncProblem:
    kind: str  # auth, rate_limited, unreachable, api, cli
    message: str
    since: datetime


class TailscaleManager:
    def __init__(
        self,
        store: TailnetStore,
        cli: TailscaleCli,
        api: TailscaleApi | None,
        farm_ids: Callable[[], set[str]],
        clock: Clock,
        *,
        interval_s: float = 300.0,
        retry_s: float = 10.0,
        expiry_warning: timedelta = timedelta(days=14),
    ) -> None:
        self.store = store
        self.cli = cli
        self.api = api
        self.farm_ids = farm_ids
        self.clock = clock
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.expiry_warning = expiry_warning
        self.local: LocalStatus | None = None
        self.local_error: str | None = None
        self.problem: SyncProblem | None = None
        self.failures = 0
        self.next_attempt: datetime | None = None
        # what the last sync wrote, kept here so that health and reports never wait on the disk
        self.records: list[dict[str, Any]] = []
        self.last: dict[str, Any] = {"synced_at": None, "source": None, "tailnet": None}

    @property
    def source(self) -> str:
        return "api" if self.api else "local"

    async def load(self) -> None:
        """The devices and the sync the store holds from before (read once, at start, off the event loop)."""
        self.records = await self.store.db.read(self.store.devices)
        self.last = await self.store.db.read(self.store.last_sync)

    async def run(self, stop: asyncio.Event, may_sync: Callable[[], bool] = lambda: True,
                  standby_s: float = 5.0) -> None:
        """Sync every interval while ``may_sync()`` (this node holds the lease); otherwise read what the node
        that holds it synced, every ``standby_s``, so that this node's REST answers the same."""
        while not stop.is_set():
            if not may_sync():
                await self.load()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), standby_s)
                continue
            try:
                delay = await self.sync_once()
            except Exception:  # a bug here must not take the discovery node down with it
                log.exception("tailnet sync failed unexpectedly")
                delay = self.interval_s
            self.next_attempt = self.clock() + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def sync_once(self) -> float:
        """One sync; returns the seconds until the next (the interval, or a backoff after a failure)."""
        await self._read_local()
        try:
            devices = await self._devices()
        except (TailscaleApiError, TailscaleCliError) as exc:
            return self._failed(exc)
        farm_ids = await asyncio.to_thread(self.farm_ids)  # the registry's and the identities' files
        now = self.clock()
        records = device_records(devices, farm_ids, now, self.expiry_warning)
        tailnet = self._tailnet_name()
        await self.store.replace(records, now, self.source, tailnet)
        self.records = records
        self.last = {"synced_at": format_ts(now), "source": self.source, "tailnet": tailnet}
        if self.problem:
            log.info("tailnet sync works again after %d failure(s)", self.failures)
        self.problem = None
        self.failures = 0
        flagged = {r["farm_id"]: r["flags"] for r in records if r["farm_id"] and r["flags"]}
        for farm_id, farm_flags in flagged.items():
            log.warning("farm %s on the tailnet: %s", farm_id, ", ".join(farm_flags))
        return self.interval_s

    async def _read_local(self) -> None:
        try:
            self.local = await self.cli.status()
            self.local_error = None
        except TailscaleCliError as exc:
            if self.local_error != str(exc):
                log.warning("local tailscaled: %s", exc)
            self.local = None
            self.local_error = str(exc)

    async def _devices(self) -> list[Device]:
        if self.api is not None:
            return await self.api.devices()
        if self.local is None:
            raise TailscaleCliError(self.local_error or "tailscale status unavailable")
        return devices_from_local(self.local)

    def _failed(self, exc: Exception) -> float:
        kind = {
            TailscaleAuthError: "auth", TailscaleRateLimited: "rate_limited", TailscaleUnreachable: "unreachable",
            TailscaleCliError: "cli",
        }.get(type(exc), "api")
        self.failures += 1
        since = self.problem.since if self.problem else self.clock()
        self.problem = SyncProblem(kind, str(exc), since)
        delay = min(self.interval_s, self.retry_s * 2 ** (self.failures - 1))
        if isinstance(exc, TailscaleRateLimited) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        log.warning("tailnet sync failed (%s): %s; trying again in %.0f s", kind, exc, delay)
        return delay

    def _tailnet_name(self) -> str | None:
        if self.api is not None and self.api.tailnet != "-":
            return self.api.tailnet
        return self.local.current_tailnet.name if self.local and self.local.current_tailnet else None

    # ---- what the node reports ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        last = self.last
        return {
            "source": self.source,
            "last_sync": last["synced_at"],
            "state": "ok" if self.problem is None and last["synced_at"] else ("error" if self.problem else "pending"),
            "error": self.problem.message if self.problem else None,
            "error_kind": self.problem.kind if self.problem else None,
            "failures": self.failures,
            "next_attempt": format_ts(self.next_attempt) if self.next_attempt else None,
            "local": self.local.backend_state if self.local else self.local_error,
        }

    def devices_report(self) -> dict[str, Any]:
        """The synced devices and the farms they belong to (blocking: ``farm_ids`` reads the node's files)."""
        records = self.records
        last = self.last
        return {
            "tailnet": last["tailnet"],
            "source": last["source"],
            "synced_at": last["synced_at"],
            "error": self.problem.message if self.problem else None,
            "devices": records,
            "farms": farms_summary(records, self.farm_ids()),
        }


def known_farms(registry: Registry | None, identities: IdentityStore) -> set[str]:
    """The farms a node knows: its farm identities and the farms its registry has heard from."""
    try:
        farms = {i.username for i in identities.all() if i.role is Role.FARM}
    except StoreError:
        farms = set()
    return farms | ({farm["farm_id"] for farm in registry.farms()} if registry else set())


def build_manager(settings: DiscoverySettings, farm_ids: Callable[[], set[str]], clock: Clock,
                  store: TailnetStore) -> TailscaleManager:
    api = None
    if settings.tailscale_api_key:
        api = TailscaleApi(settings.tailscale_api_key, settings.tailnet or "-", settings.tailscale_api_url)
    return TailscaleManager(
        store, TailscaleCli(settings.tailscale_cli), api, farm_ids, clock,
        interval_s=settings.sync_interval, retry_s=settings.tailscale_retry,
        expiry_warning=timedelta(days=settings.key_expiry_warning_days),
    )
