"""The local tailscaled, through its command line: ``tailscale status --json`` and ``whois --json``."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from common.tailscale.models import LocalStatus, WhoIs

CLI_TIMEOUT_S = 10.0
M = TypeVar("M", bound=BaseModel)


class TailscaleCliError(Exception):
    """The CLI is missing, failed, or printed something that is not its JSON."""


class TailscaleCli:
    def __init__(self, path: str = "tailscale", timeout_s: float = CLI_TIMEOUT_S) -> None:
        self.path = path
        self.timeout_s = timeout_s

    async def status(self) -> LocalStatus:
        return _parse(LocalStatus, await self._json("status", "--json"), "tailscale status")

    async def whois(self, address: str) -> WhoIs:
        return _parse(WhoIs, await self._json("whois", "--json", address), "tailscale whois")

    def whois_blocking(self, address: str) -> WhoIs:
        """``whois`` for code outside an event loop (the mobile web's request handlers)."""
        what = f"{self.path} whois --json {address}"
        try:
            done = subprocess.run([self.path, "whois", "--json", address], capture_output=True,
                                  timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TailscaleCliError(f"{what}: {exc}") from None
        if done.returncode != 0:
            raise TailscaleCliError(f"{what}: {done.stderr.decode(errors='replace').strip()}")
        try:
            data = json.loads(done.stdout)
        except ValueError:
            raise TailscaleCliError(f"{what}: did not print JSON") from None
        return _parse(WhoIs, data, "tailscale whois")

    async def _json(self, *args: str) -> dict[str, object]:
        what = f"{self.path} {' '.join(args)}"
        try:
            process = await asyncio.create_subprocess_exec(
                self.path, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise TailscaleCliError(f"cannot run {self.path}: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise TailscaleCliError(f"{what}: no answer within {self.timeout_s:.0f} s") from None
        if process.returncode != 0:
            reason = err.decode(errors="replace").strip() or f"exit status {process.returncode}"
            raise TailscaleCliError(f"{what}: {reason}")
        try:
            data = json.loads(out)
        except ValueError:
            raise TailscaleCliError(f"{what}: did not print JSON") from None
        if not isinstance(data, dict):
            raise TailscaleCliError(f"{what}: did not print a JSON object")
        return data


def _parse(model: type[M], data: dict[str, object], what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(map(str, error["loc"]))
        raise TailscaleCliError(f"{what}: unexpected output at {where}: {error['msg']}") from None
