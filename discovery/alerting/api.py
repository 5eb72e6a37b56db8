"""REST of the alerting, behind the API's Bearer auth: ``GET /api/alerts``, ``POST /api/alerts/{id}/ack``, and
each user's notification settings under ``/api/notify/{user}``.

A caller sees the alerts of the farms it may see. Acknowledging is for operators and admins (or a
token acting for one) and for the static ``API_TOKEN``, recorded as ``API_TOKEN``. A user's settings
are for a token acting for that user, for admins, and for the static ``API_TOKEN`` (the mobile web's,
which acts only for its logged-in user). Parameters and bodies are validated by their models in
:mod:`contract.rest`; the identity store is read off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from common.identities import Role, StoreError
from contract.payloads import utc_now
from contract.rest import (
    AlertAnswer,
    AlertList,
    AlertPath,
    AlertsQuery,
    ChannelBody,
    ChannelQuery,
    ChannelState,
    ChannelTest,
    NotifySettings,
    NotifyTest,
    PreferencesBody,
    UserPath,
)
from discovery.alerting.channels import Channels, check_url, display
from discovery.alerting.compose import Reader, test_message
from discovery.alerting.kinds import Severity
from discovery.alerting.service import AckRefused, AlertingService
from discovery.alerting.store import AlertStore, Step
from discovery.alerting.webpush import SubscriptionError, is_webpush, subscription_url
from discovery.api import CALLER, IDENTITIES, STATIC_TOKEN_CALLER, Caller, Refused, answer, parameters

B = TypeVar("B", bound=BaseModel)

ALERTING = web.AppKey("alerting", AlertingService)
ACKNOWLEDGING_ROLES = (Role.OPERATOR, Role.ADMIN)


def add_alert_routes(app: web.Application, alerting: AlertingService) -> None:
    app[ALERTING] = alerting
    app.router.add_get("/api/alerts", _alerts)
    app.router.add_post("/api/alerts/{id}/ack", _acknowledge)
    app.router.add_get("/api/notify/{user}", _settings)
    app.router.add_patch("/api/notify/{user}", _set_preferences)
    app.router.add_post("/api/notify/{user}/channels", _add_channel)
    app.router.add_delete("/api/notify/{user}/channels", _remove_channel)
    app.router.add_post("/api/notify/{user}/test", _test)


async def _alerts(request: web.Request) -> web.Response:
    query = parameters(AlertsQuery, request.query)
    alerting = request.app[ALERTING]
    caller: Caller = request[CALLER]
    items = await alerting.alert_items(query.farm, query.state)
    if caller.owner is not None:
        farms = {item.farm_id for item in items}
        owners = await asyncio.to_thread(lambda: {farm: alerting.farm_owner(farm) for farm in farms})
        items = [item for item in items if owners[item.farm_id] == caller.owner]
    return answer(AlertList(alerts=items))


async def _acknowledge(request: web.Request) -> web.Response:
    path = parameters(AlertPath, request.match_info)
    alerting = request.app[ALERTING]
    caller: Caller = request[CALLER]
    if caller is not STATIC_TOKEN_CALLER and not await asyncio.to_thread(_may_acknowledge, request, caller):
        raise Refused(403, "forbidden", "acknowledging is for operators and admins")
    found = next((a for a in alerting.engine.alerts() if a.id == path.id), None)
    if (found is not None and caller.owner is not None
            and await asyncio.to_thread(alerting.farm_owner, found.farm_id) != caller.owner):
        found = None
    if found is None:
        raise Refused(404, "alert not found", "no alert with this id is open")
    try:
        alert = await alerting.acknowledge(path.id, caller.name, via="rest")
    except AckRefused as exc:
        raise Refused(404, "alert not found", str(exc)) from None
    return answer(AlertAnswer(alert=alerting.item(alert)))


def _may_acknowledge(request: web.Request, caller: Caller) -> bool:
    """Blocking (the identity store's file)."""
    try:
        identity = request.app[IDENTITIES].get(caller.name)
    except StoreError:
        return False
    return identity is not None and identity.role in ACKNOWLEDGING_ROLES


# ---- a user's notification settings ----------------------------------------------------------------------


async def _settings(request: web.Request) -> web.Response:
    alerting, user = await _settings_of(request)
    return answer(await alerting.store.call(_read_settings, alerting.store.store, user, _webpush_key(alerting)))


async def _set_preferences(request: web.Request) -> web.Response:
    alerting, user = await _settings_of(request)
    body = await _body(request, PreferencesBody)
    preferences: dict[str, str | None] = {}
    if body.language is not None:
        preferences["language"] = body.language
    if "quiet_start" in body.model_fields_set or "quiet_end" in body.model_fields_set:
        preferences |= {"quiet_start": body.quiet_start, "quiet_end": body.quiet_end}
    await alerting.store.call(_write_preferences, alerting.store.store, user, preferences,
                              None if body.severity is None else Severity(body.severity))
    return answer(await alerting.store.call(_read_settings, alerting.store.store, user, _webpush_key(alerting)))


async def _add_channel(request: web.Request) -> web.Response:
    alerting, user = await _settings_of(request)
    body = await _body(request, ChannelBody)
    if body.webpush is not None:
        try:
            url = subscription_url(body.webpush.endpoint, body.webpush.p256dh, body.webpush.auth)
        except SubscriptionError as exc:
            raise Refused(400, ChannelBody.problem, str(exc)) from None
    else:
        assert body.url is not None
        url = body.url
    problem = await asyncio.to_thread(check_url, url)  # Apprise's plug-ins: a blocking first load
    if problem:
        raise Refused(400, ChannelBody.problem, problem)
    await alerting.store.call(alerting.store.store.add_channel, user, url, Severity(body.severity), body.tier)
    return answer(await alerting.store.call(_read_settings, alerting.store.store, user, _webpush_key(alerting)),
                  201)


async def _remove_channel(request: web.Request) -> web.Response:
    alerting, user = await _settings_of(request)
    query = parameters(ChannelQuery, request.query)
    if not await alerting.store.call(_remove, alerting.store.store, user, query.url):
        raise Refused(404, "channel not found", f"{user} has no channel {display(query.url)}")
    return answer(await alerting.store.call(_read_settings, alerting.store.store, user, _webpush_key(alerting)))


async def _test(request: web.Request) -> web.Response:
    """A test message through each of the user's channels, tried once each (the answer should not wait for the
    retries' backoff); each result recorded and kept as the channel's health, as ``kubmesh notify test`` does."""
    alerting, user = await _settings_of(request)
    store = alerting.store.store
    channels = await alerting.store.call(store.channels, user)
    recipient = (await alerting.store.call(store.recipients)).get(user)
    message = test_message(Reader(recipient.language, recipient.timezone) if recipient else Reader())
    sender = Channels(alerting.channels.push, retries=0)
    try:
        deliveries = await asyncio.gather(*(sender.deliver(c.url, message) for c in channels))
    finally:
        sender.close()
    now = utc_now()
    results = []
    for channel, delivery in zip(channels, deliveries, strict=True):
        await alerting.store.call(store.record, [Step(now, None, (), "test", user, display(channel.url),
                                                      delivery.ok, delivery.error)])
        await alerting.store.call(store.channel_result, user, channel.url, delivery.ok, delivery.error, now)
        results.append(ChannelTest(url=display(channel.url), ok=delivery.ok, error=delivery.error))
    return answer(NotifyTest(results=results))


async def _settings_of(request: web.Request) -> tuple[AlertingService, str]:
    """The user whose settings these are, once the caller may reach them: that user, an admin, the static token."""
    user = parameters(UserPath, request.match_info).user
    caller: Caller = request[CALLER]
    try:
        identities = request.app[IDENTITIES]
        target = await asyncio.to_thread(identities.get, user)
        acting = None if caller is STATIC_TOKEN_CALLER else await asyncio.to_thread(identities.get, caller.name)
    except StoreError as exc:
        raise Refused(503, "identity store unavailable", str(exc)) from None
    if caller is not STATIC_TOKEN_CALLER and caller.name != user and (acting is None or acting.role is not Role.ADMIN):
        raise Refused(403, "forbidden", "a user's notification settings are theirs and the admins'")
    if target is None or not target.role.is_person:
        raise Refused(404, "user not found", f"no user {user!r}")
    return request.app[ALERTING], user


async def _body(request: web.Request, model: type[B]) -> B:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        problem = getattr(model, "problem", "invalid body")
        raise Refused(400, problem, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}".lstrip(": ")
                                              for e in exc.errors())) from None


def _webpush_key(alerting: AlertingService) -> str | None:
    return alerting.channels.push.keys.public_key if alerting.channels.push is not None else None


def _read_settings(store: AlertStore, user: str, webpush_key: str | None) -> NotifySettings:
    """On the store's thread."""
    recipient = store.recipients().get(user)
    channels = [ChannelState(url=display(c.url), webpush=is_webpush(c.url), severity=c.severity.value, tier=c.tier,
                             state="failing" if c.failing else "ok", failures=c.failures, last_error=c.last_error)
                for c in store.channels(user)]
    return NotifySettings(username=user, language="en" if recipient and recipient.language == "en" else "ru",
                          quiet_start=recipient.quiet_start if recipient else None,
                          quiet_end=recipient.quiet_end if recipient else None, channels=channels,
                          webpush_key=webpush_key)


def _write_preferences(store: AlertStore, user: str, preferences: dict[str, str | None],
                       severity: Severity | None) -> None:
    """On the store's thread. The lowest severity is each channel's: set on all of the user's channels."""
    store.set_preferences(user, **preferences)
    if severity is not None:
        for channel in store.channels(user):
            store.add_channel(user, channel.url, severity, channel.tier)


def _remove(store: AlertStore, user: str, url: str) -> bool:
    """On the store's thread: the channel named by its URL, or by its listed form (a Web Push one's, keyless)."""
    stored = next((c.url for c in store.channels(user) if url in (c.url, display(c.url))), None)
    return stored is not None and store.remove_channel(user, stored)
