"""Optional (``TAILNET_WHOIS=1``): tie every mobile-web request to the caller's tailnet identity.

The caller's address is looked up with ``tailscale whois --json``; a device
tagged with one of ``tailnet_refuse_tags`` (``tag:farm`` by default: a farm
gateway has no business browsing the web front end) gets 403, as does an
address that is not on the tailnet. Requests from the machine itself (probes,
a local reverse proxy) are let through. Answers are cached for a minute per
address. The identity found is ``g.tailnet_identity`` and the response header
``X-Tailnet-User``.
"""

from __future__ import annotations

import ipaddress
import logging
import time

from flask import Flask, Response, g, request

from common.tailscale.local import TailscaleCli, TailscaleCliError
from common.tailscale.models import WhoIs
from mobile_web.settings import WebSettings

log = logging.getLogger("kubmesh.web.tailnet")
CACHE_S = 60.0


class TailnetGuard:
    def __init__(self, cli: TailscaleCli, refuse_tags: list[str]) -> None:
        self.cli = cli
        self.refuse_tags = set(refuse_tags)
        self._cache: dict[str, tuple[float, WhoIs | None, str]] = {}

    def install(self, app: Flask) -> None:
        app.before_request(self.check)
        app.after_request(self.tag_response)

    def check(self) -> Response | None:
        address = request.remote_addr or ""
        if request.endpoint == "static" or _is_local(address):
            return None
        who, problem = self._whois(address)
        if who is None:
            log.warning("refused %s %s from %s: %s", request.method, request.path, address, problem)
            return _forbidden("this address is not a device of the tailnet")
        refused = self.refuse_tags & set(who.node.tags)
        if refused:
            log.warning("refused %s %s from %s (%s): tagged %s", request.method, request.path, address,
                        who.node.name, ", ".join(sorted(refused)))
            return _forbidden("devices tagged " + ", ".join(sorted(refused)) + " may not use the mobile web")
        g.tailnet_identity = who.user_profile.login_name if who.user_profile else who.node.name.rstrip(".")
        return None

    def tag_response(self, response: Response) -> Response:
        identity = g.get("tailnet_identity")
        if identity:
            response.headers["X-Tailnet-User"] = identity
        return response

    def _whois(self, address: str) -> tuple[WhoIs | None, str]:
        now = time.monotonic()
        cached = self._cache.get(address)
        if cached and cached[0] > now:
            return cached[1], cached[2]
        try:
            who: WhoIs | None = self.cli.whois_blocking(address)
            problem = ""
        except TailscaleCliError as exc:
            who, problem = None, str(exc)
        self._cache[address] = (now + CACHE_S, who, problem)
        return who, problem


def install_tailnet_guard(app: Flask, settings: WebSettings) -> None:
    if settings.tailnet_whois:
        TailnetGuard(TailscaleCli(settings.tailscale_cli), settings.tailnet_refuse_tags).install(app)


def _is_local(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _forbidden(message: str) -> Response:
    return Response(message + "\n", status=403, mimetype="text/plain")
