"""The SMS fallback against a modem that runs here: Gammu's AT driver talking to a simulated modem on a pty pair.

Also its settings, and the notifier (policy + modem + health + the report of what was sent) driven
step by step on a fake clock.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import ConfigError, load_settings
from contract.payloads import Heartbeat, decode, encode
from farm_agent.settings import AgentSettings
from farm_agent.sms.gammu_modem import GammuModem
from farm_agent.sms.modem import ModemError, make_modem
from farm_agent.sms.notifier import SentSms, SmsNotifier
from farm_agent.sms.policy import SmsPolicy
from tests.gsm_modem import SimulatedModem
from tests.helpers import free_port
from tests.test_doctor import doctor, lines
from tests.test_sms_policy import FakeClock

FARMER = "+79001234567"


@pytest.fixture
def gsm_modem(tmp_path: Path) -> Iterator[SimulatedModem]:
    modem = SimulatedModem(tmp_path / "modem")
    modem.plug()
    yield modem
    modem.unplug()


# ---- settings ----------------------------------------------------------------------------------------


def test_sms_settings_from_the_environment_and_from_yaml(tmp_path: Path) -> None:
    settings = load_settings(AgentSettings, env={
        "FARM_ID": "farm-001", "SMS_DEVICE": "/dev/ttyUSB2", "SMS_NUMBERS": "+79001234567, 89007654321",
        "SMS_AFTER": "120", "SMS_MAX_PER_HOUR": "3", "SMS_LANGUAGE": "en"})
    assert (settings.sms_device, settings.sms_numbers, settings.sms_after, settings.sms_max_per_hour,
            settings.sms_language) == ("/dev/ttyUSB2", ["+79001234567", "89007654321"], 120.0, 3, "en")
    config = tmp_path / "farm_config.yaml"
    config.write_text("farm: {id: farm-001}\nsms:\n  device: /dev/ttyUSB2\n  numbers: ['+79001234567']\n")
    settings = load_settings(AgentSettings, config_file=config, env={})
    assert (settings.sms_numbers, settings.sms_after, settings.sms_max_per_hour, settings.sms_language) == (
        ["+79001234567"], 300.0, 6, "ru")
    assert load_settings(AgentSettings, env={"FARM_ID": "farm-001"}).sms_device is None


@pytest.mark.parametrize(("env", "message"), [
    ({"SMS_NUMBERS": "+7900123456x"}, "environment variable SMS_NUMBERS: Value error, '+7900123456x' is not a phone"),
    ({"SMS_DEVICE": "/dev/ttyUSB2"}, "sms.device is set but no number is given"),
    ({"SMS_LANGUAGE": "de"}, "environment variable SMS_LANGUAGE"),
    ({"SMS_MAX_PER_HOUR": "0"}, "environment variable SMS_MAX_PER_HOUR"),
])
def test_bad_sms_settings_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        load_settings(AgentSettings, env={"FARM_ID": "farm-001", **env})


# ---- the modem ---------------------------------------------------------------------------------------


async def test_gammu_sends_a_long_russian_sms_as_linked_parts_and_reads_signal(gsm_modem: SimulatedModem) -> None:
    modem = GammuModem(str(gsm_modem.device))
    try:
        status = await modem.status()
        assert status.registered and status.signal_percent == 60 and status.network == "25001"
        text = ("Ферма «Птичник 2»: нет связи с сервером 5 мин, мониторинг отрезан от фермы. "
                "АВАРИЯ: авария (бит 3), авария (бит 5).")
        assert await modem.send(FARMER, text) == 2
        assert await modem.send(FARMER, "Farm 2: ALARM: alarm bit 3.") == 1
    finally:
        await modem.close()
    assert [(sms.number, sms.text) for sms in gsm_modem.messages] == [
        (FARMER, text), (FARMER, "Farm 2: ALARM: alarm bit 3.")]


@pytest.mark.slow
async def test_an_unplugged_modem_raises_modem_error_and_works_again_when_plugged_back(
    gsm_modem: SimulatedModem,
) -> None:
    modem = GammuModem(str(gsm_modem.device))
    try:
        await modem.open()
        gsm_modem.unplug()
        with pytest.raises(ModemError, match="ttyUSB2"):
            await modem.status()
        with pytest.raises(ModemError, match="doesn't exist"):
            await modem.send(FARMER, "x")
        gsm_modem.plug()
        assert (await modem.status()).registered
    finally:
        await modem.close()


async def test_a_modem_off_the_network_says_so(gsm_modem: SimulatedModem) -> None:
    gsm_modem.configure(registered=False)
    modem = GammuModem(str(gsm_modem.device))
    try:
        assert not (await modem.status()).registered
    finally:
        await modem.close()


# ---- the notifier -----------------------------------------------------------------------------------


class Bus:
    def __init__(self) -> None:
        self.up = False
        self.events: list[SentSms] = []
        self.heartbeats = 0

    def heartbeat(self) -> None:
        self.heartbeats += 1

    async def report(self, sms: SentSms) -> bool:
        if self.up:
            self.events.append(sms)
        return self.up


def make_notifier(device: Path, clock: FakeClock, bus: Bus, **options: float) -> SmsNotifier:
    policy = SmsPolicy("Птичник 2", after=60, max_per_hour=6, language="ru", group_window=5, clock=clock)
    return SmsNotifier(policy, GammuModem(str(device)), [FARMER, "+79007654321"], bus.report,
                       farm_id="farm-001", changed=bus.heartbeat, **options)


async def test_the_notifier_texts_every_number_and_reports_once_monitoring_hears_the_farm(
    gsm_modem: SimulatedModem,
) -> None:
    clock, bus = FakeClock(), Bus()
    notifier = make_notifier(gsm_modem.device, clock, bus)
    try:
        notifier.link(True)
        notifier.discovery(True)
        notifier.alarms(["alarm bit 3"])
        notifier.link(False)
        await notifier.step()
        assert notifier.health.ok and notifier.health.registered and notifier.health.signal_percent == 60
        clock.advance(61)
        await notifier.step()
        await notifier.step()
        assert [sms.number for sms in gsm_modem.messages] == [FARMER, "+79007654321"]
        assert "АВАРИЯ: авария (бит 3)" in gsm_modem.messages[0].text
        assert notifier.health.sent == 1 and notifier.health.last_sms == clock.now
        assert bus.events == []  # nobody to tell while cut off
        bus.up = True
        notifier.link(True)
        await notifier.step()
        [event] = [sms.event() for sms in bus.events]
        assert event.kind == "sms_sent" and event.detail["alarms"] == ["alarm bit 3"]
        assert event.detail["recipients"] == 2 and event.detail["reason"] == "cut_off"
        await notifier.step()
        assert len(bus.events) == 1
    finally:
        await notifier.modem.close()


async def test_an_unplugged_modem_is_reported_and_the_message_goes_when_it_is_back(
    gsm_modem: SimulatedModem,
) -> None:
    clock, bus = FakeClock(), Bus()
    notifier = make_notifier(gsm_modem.device, clock, bus, retry_after=30, check_every=60)
    try:
        await notifier.step()
        gsm_modem.unplug()
        clock.advance(61)
        await notifier.step()  # the check finds the modem gone; the due message cannot leave
        assert not notifier.health.ok
        assert notifier.health.error is not None and "ttyUSB2" in notifier.health.error
        assert notifier.health.failed == 1
        assert bus.heartbeats == 2  # the modem found, then lost: each told at once
        gsm_modem.plug()
        clock.advance(31)
        await notifier.step()
        assert notifier.health.ok and notifier.health.sent == 1
        assert len(gsm_modem.messages) == 2
    finally:
        await notifier.modem.close()


async def test_run_keeps_going_through_a_failing_modem(tmp_path: Path) -> None:
    clock, bus = FakeClock(), Bus()
    notifier = make_notifier(tmp_path / "no-such-modem", clock, bus)
    task = asyncio.create_task(notifier.run())
    try:
        for _ in range(100):
            if notifier.health.error:
                break
            await asyncio.sleep(0.05)
        assert notifier.health.error is not None and "doesn't exist" in notifier.health.error
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_without_the_modem_library_the_modem_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gammu", None)  # import gammu raises ImportError
    monkeypatch.delitem(sys.modules, "farm_agent.sms.gammu_modem", raising=False)
    modem = make_modem("/dev/ttyUSB2")
    with pytest.raises(ModemError, match=r"install kubmesh\[sms\]"):
        await modem.status()
    await modem.close()


def test_the_heartbeat_carries_the_modem_and_old_heartbeats_still_decode() -> None:
    old = b'{"ts": "2026-07-14T13:00:00.000Z", "uptime_s": 5, "polls_ok": 1, "polls_failed": 0, "modbus": "ok"}'
    assert decode(Heartbeat, old).sms is None
    beat = decode(Heartbeat, old[:-1] + b', "sms": {"device": "/dev/ttyUSB2", "ok": true, "registered": true, '
                  b'"signal_percent": 60, "last_sms": "2026-07-14T12:58:00.000Z", "sent": 1, "newer": 1}}')
    assert beat.sms is not None and beat.sms.ok and beat.sms.signal_percent == 60 and beat.sms.sent == 1
    assert b'"sms":{"device":"/dev/ttyUSB2","ok":true' in encode(beat)


def test_doctor_asks_the_modem_when_no_agent_holds_it(gsm_modem: SimulatedModem, tmp_path: Path) -> None:
    env = {"SMS_DEVICE": str(gsm_modem.device), "SMS_NUMBERS": FARMER, "KUBMESH_API_PORT": str(free_port())}
    base = ["--farm-id", "farm-001", "--data-dir", str(tmp_path / "farm"), "--mqtt-url", "mqtt://127.0.0.1:1"]
    found = doctor(*base, env=env)
    assert lines(found)["SMS modem"] == "ok", found.stdout
    assert "registered on 25001, signal 60% (the modem says); 1 number(s) to text" in found.stdout
    gsm_modem.unplug()
    try:
        missing = doctor(*base, env=env)
    finally:
        gsm_modem.plug()
    assert lines(missing)["SMS modem"] == "FAIL" and "doesn't exist" in missing.stdout
    assert "Traceback" not in missing.stderr
