"""The SMS fallback's decisions (farm_agent/sms/policy.py) and words (texts.py), on a fake clock: pure logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from farm_agent.sms.policy import Outgoing, SmsPolicy
from farm_agent.sms.texts import MAX_CHARS, Story, compose, label_in


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 7, 14, 13, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_policy(clock: FakeClock, **options: object) -> SmsPolicy:
    settings: dict[str, object] = {"after": 300.0, "max_per_hour": 6, "language": "ru", "group_window": 20.0}
    settings.update(options)
    return SmsPolicy("Птичник 2", clock=clock, **settings)  # type: ignore[arg-type]


def send_due(policy: SmsPolicy) -> Outgoing | None:
    outgoing = policy.due()
    if outgoing is not None:
        policy.sent(outgoing)
    return outgoing


def run(policy: SmsPolicy, clock: FakeClock, seconds: float, step: float = 1.0) -> list[Outgoing]:
    """Let time pass, sending whatever falls due, as the notifier does."""
    sent = []
    for _ in range(int(seconds / step)):
        clock.advance(step)
        if (outgoing := send_due(policy)) is not None:
            sent.append(outgoing)
    return sent


def linked(policy: SmsPolicy) -> SmsPolicy:
    policy.link(True)
    policy.discovery(True)
    return policy


def test_broker_cut_longer_than_after_with_an_alarm_active_texts_once_with_farm_and_label() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock))
    policy.alarms(["alarm bit 3"])
    policy.link(False)
    assert run(policy, clock, 299) == []
    sent = run(policy, clock, 600)
    assert len(sent) == 1
    assert sent[0].reason == "cut_off"
    assert sent[0].text == ("Ферма «Птичник 2»: нет связи с сервером 5 мин, мониторинг отрезан от фермы. "
                            "АВАРИЯ: авария (бит 3).")


def test_a_cut_shorter_than_after_texts_nothing() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock))
    policy.alarms(["alarm bit 3"])
    policy.link(False)
    run(policy, clock, 290)
    policy.link(True)
    assert run(policy, clock, 3600) == []


def test_an_agent_that_never_reaches_the_broker_texts_after_the_delay() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    sent = run(policy, clock, 301)
    assert [outgoing.text for outgoing in sent] == [
        "Ферма «Птичник 2»: нет связи с сервером 5 мин, мониторинг отрезан от фермы. Аварий нет."]


def test_discovery_offline_while_the_link_works_texts_monitoring_down_once_per_outage() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock))
    policy.discovery(False)  # its last will
    sent = run(policy, clock, 4 * 3600)
    assert len(sent) == 1
    assert sent[0].reason == "monitoring_down"
    assert "сервер мониторинга не работает" in sent[0].text
    policy.discovery(True)
    run(policy, clock, 60)
    policy.discovery(False)  # a second outage is told again
    again = run(policy, clock, 301)
    assert [outgoing.reason for outgoing in again] == ["monitoring_down"]


def test_changes_in_an_outage_are_told_as_they_happen_and_only_once() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock))
    policy.link(False)
    run(policy, clock, 301)
    policy.alarms(["alarm bit 3"])
    first = run(policy, clock, 60)
    assert [outgoing.story.raised for outgoing in first] == [["alarm bit 3"]]
    assert first[0].story.notice is None  # the cut-off notice was the first message's
    policy.alarms([])
    policy.controller(answering=False)
    second = run(policy, clock, 60)
    assert [outgoing.text for outgoing in second] == [
        "Ферма «Птичник 2»: Снято: авария (бит 3). Контроллер не отвечает."]
    assert run(policy, clock, 3600) == []


def test_a_message_that_leaves_as_the_link_comes_back_does_not_silence_the_next_outage() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock))
    policy.link(False)
    clock.advance(301)
    outgoing = policy.due()
    assert outgoing is not None
    policy.link(True)  # while the modem was still sending it
    policy.sent(outgoing)
    policy.link(False)
    again = run(policy, clock, 301)
    assert [message.story.notice for message in again] == ["cut_off"]


def test_a_burst_of_alarms_goes_out_as_one_message() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock))
    policy.link(False)
    run(policy, clock, 301)
    for bit in range(5):
        policy.alarms([f"alarm bit {n}" for n in range(bit + 1)])
        clock.advance(3)
        assert send_due(policy) is None  # still gathering
    sent = run(policy, clock, 60)
    assert len(sent) == 1
    assert sent[0].story.raised == [f"alarm bit {n}" for n in range(5)]


def test_an_alarm_that_comes_and_goes_within_the_window_is_not_told() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock))
    policy.link(False)
    run(policy, clock, 301)
    policy.alarms(["alarm bit 1"])
    clock.advance(5)
    policy.alarms([])
    assert run(policy, clock, 120) == []


def test_rate_limit_holds_under_an_alarm_storm_and_the_last_message_tells_the_state_then() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock, max_per_hour=6))
    policy.link(False)
    sent: list[tuple[datetime, Outgoing]] = []
    for second in range(3 * 3600):  # an alarm flips every 25 s for three hours
        if second % 25 == 0:
            policy.alarms(["alarm bit 7"] if (second // 25) % 2 else ["alarm bit 7", "alarm bit 8"])
        clock.advance(1)
        if (outgoing := send_due(policy)) is not None:
            sent.append((clock.now, outgoing))
    moments = [moment for moment, _ in sent]
    assert len(moments) >= 6 * 2  # the limit spends itself, it does not stop the farm texting
    for index, moment in enumerate(moments):
        assert sum(1 for other in moments[index:] if other - moment < timedelta(hours=1)) <= 6
    policy.alarms(["alarm bit 7"])
    tail = run(policy, clock, 3600)
    told = set(tail[-1].alarms) if tail else set(sent[-1][1].alarms)
    assert told == {"alarm bit 7"}
    assert policy.held_back is False


def test_held_back_says_a_message_waits_for_the_hourly_limit() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock, max_per_hour=1))
    policy.link(False)
    run(policy, clock, 301)
    policy.alarms(["alarm bit 2"])
    run(policy, clock, 60)
    assert policy.held_back is True
    assert run(policy, clock, 3600)[0].story.raised == ["alarm bit 2"]
    assert policy.held_back is False


def test_english_messages() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock, language="en"))
    policy.alarms(["alarm bit 3", "Ventilation failure"])
    policy.controller(answering=False)
    policy.link(False)
    sent = run(policy, clock, 301)
    assert [outgoing.text for outgoing in sent] == [
        "Farm Птичник 2: no link to the server for 5 min, monitoring is cut off from this farm. "
        "ALARM: alarm bit 3, Ventilation failure. The controller is not answering."]


def test_the_rate_limit_spans_outages() -> None:
    clock = FakeClock()
    policy = linked(make_policy(clock, max_per_hour=2, after=60))
    notices = []
    for _ in range(4):
        policy.link(False)
        notices += run(policy, clock, 61)
        policy.link(True)
        run(policy, clock, 1)
    assert len(notices) == 2


def test_a_long_list_of_alarms_is_shortened_to_fit() -> None:
    story = Story("Птичник 2", notice="cut_off", minutes=5, raised=[f"alarm bit {bit}" for bit in range(40)])
    text = compose(story, "ru")
    assert len(text) <= MAX_CHARS
    assert "авария (бит 0)" in text
    assert "и ещё " in text


def test_unlabelled_bits_are_named_in_the_farmers_language_and_labels_are_kept() -> None:
    assert label_in("warning bit 12", "ru") == "предупреждение (бит 12)"
    assert label_in("alarm bit 12", "en") == "alarm bit 12"
    assert label_in("Вентиляция", "ru") == "Вентиляция"


observation = st.one_of(
    st.tuples(st.just("link"), st.booleans()),
    st.tuples(st.just("discovery"), st.sampled_from([True, False, None])),
    st.tuples(st.just("alarms"), st.lists(st.sampled_from(["a", "b", "c"]), max_size=3)),
    st.tuples(st.just("controller"), st.booleans()),
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=900)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(observation, max_size=60))
def test_any_history_keeps_the_limit_the_delay_and_one_notice_per_outage(steps: list[tuple[str, object]]) -> None:
    clock = FakeClock()
    policy = make_policy(clock, after=120, max_per_hour=3, group_window=10)
    sent: list[datetime] = []
    cut_since: datetime | None = policy.cut_since
    notices_this_outage = 0
    for kind, value in steps:
        if kind == "wait":
            for _ in range(int(value)):  # type: ignore[call-overload]
                clock.advance(1)
                outgoing = send_due(policy)
                if outgoing is not None:
                    assert policy.cut_since is not None
                    assert clock.now - policy.cut_since >= timedelta(seconds=120)
                    notices_this_outage += outgoing.story.notice is not None
                    assert notices_this_outage <= 1
                    sent.append(clock.now)
        else:
            getattr(policy, kind)(value)
        if policy.cut_since != cut_since:
            cut_since = policy.cut_since
            notices_this_outage = 0
    for index, moment in enumerate(sent):
        assert sum(1 for other in sent[index:] if other - moment < timedelta(hours=1)) <= 3
