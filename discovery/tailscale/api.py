"""A small client of the Tailscale API v2: the calls the discovery node makes, nothing else.

Its own rather than the ``tailscale`` package on PyPI: that client's base URL
is fixed to api.tailscale.com, while a deployment behind a proxy and our tests
(a local aiohttp server answering with recorded responses) need it
configurable; and the discovery node needs only two calls, with its own error
types for the cases it handles differently (a refused key, a rate limit, a
timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from pydantic import ValidationError

from common.tailscale.models import AuthKey, Device

T = TypeVar("T")
DEFAULT_API_URL = "https://api.tailscale.com/api/v2"


class TailscaleApiError(Exception):
    """The API answered with an error, or did not answer."""


class TailscaleAuthError(TailscaleApiError):
    """401/403: the API key is wrong, expired or lacks the scope."""


class TailscaleRateLimited(TailscaleApiError):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TailscaleUnreachable(TailscaleApiError):
    """A timeout or a connection fault."""


class TailscaleApi:
    def __init__(
        self, api_key: str, tailnet: str = "-", base_url: str = DEFAULT_API_URL, timeout_s: float = 15.0
    ) -> None:
        self.api_key = api_key
        self.tailnet = tailnet or "-"
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def devices(self) -> list[Device]:
        body = await self._request("GET", f"/tailnet/{self.tailnet}/devices", params={"fields": "all"})
        return _parse("devices", lambda: [Device.model_validate(item) for item in body.get("devices") or []])

    async def create_auth_key(
        self, tags: list[str], description: str, expiry_s: int = 86400, reusable: bool = False
    ) -> AuthKey:
        """A pre-authorised, tagged key for enrolling one device; the key is in the answer only."""
        body = {
            "capabilities": {"devices": {"create": {
                "reusable": reusable, "ephemeral": False, "preauthorized": True, "tags": tags,
            }}},
            "expirySeconds": expiry_s,
            "description": description[:50],
        }
        answer = await self._request("POST", f"/tailnet/{self.tailnet}/keys", json=body)
        return _parse("the new key", lambda: AuthKey.model_validate(answer))

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session, session.request(
                method, self.base_url + path, headers=headers, **kwargs
            ) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                if response.status >= 400:
                    raise _error(response.status, body, response.headers.get("Retry-After"))
        except TimeoutError:
            raise TailscaleUnreachable(f"{method} {path}: no answer within {self.timeout.total:.0f} s") from None
        except aiohttp.ClientError as exc:
            raise TailscaleUnreachable(f"{method} {path}: {exc}") from None
        if not isinstance(body, dict):
            raise TailscaleApiError(f"{method} {path}: the answer is not a JSON object")
        return body


def _parse(what: str, parse: Callable[[], T]) -> T:
    try:
        return parse()
    except (ValidationError, TypeError, AttributeError) as exc:
        raise TailscaleApiError(f"unexpected answer for {what}: {str(exc).splitlines()[0]}") from None


def _error(status: int, body: Any, retry_after: str | None) -> TailscaleApiError:
    message = body.get("message") if isinstance(body, dict) else None
    text = f"HTTP {status}" + (f": {message}" if message else "")
    if status in (401, 403):
        return TailscaleAuthError(text)
    if status == 429:
        try:
            seconds = float(retry_after) if retry_after else None
        except ValueError:
            seconds = None
        return TailscaleRateLimited(text, seconds)
    return TailscaleApiError(text)
