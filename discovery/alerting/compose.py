"""One message per farm per burst, in the reader's language: the farm, what happened, since when, the
value now, and the link to the farm's page, where the alert is acknowledged with one tap."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from discovery.alerting.engine import Alert
from discovery.alerting.kinds import Severity
from discovery.alerting.rules import RuleBook

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "new": "NEW", "reminder": "STILL NOT ACKNOWLEDGED", "cleared": "ALL CLEAR", "since": "since",
        "cleared_at": "cleared at", "value": "now", "limit": "limit", "open": "Open and acknowledge",
        "critical": "CRITICAL", "warning": "warning", "alerts": "alerts", "all_clear_title": "all clear",
        "offline": "the agent's connection was lost", "silent": "nothing heard",
        "break": "sensor wire broken", "error": "sensor error", "dropped": "readings dropped by a full backlog",
        "acknowledged_by": "acknowledged by", "test_title": "test message",
        "test_body": "This is a test of your kubmesh alert channel. If you read this, it works.",
    },
    "ru": {
        "new": "НОВАЯ", "reminder": "ВСЁ ЕЩЁ НЕ ПОДТВЕРЖДЕНА", "cleared": "ОТБОЙ", "since": "с",
        "cleared_at": "снята в", "value": "сейчас", "limit": "предел", "open": "Открыть и подтвердить",
        "critical": "КРИТИЧНО", "warning": "предупреждение", "alerts": "тревог", "all_clear_title": "отбой",
        "offline": "агент потерял связь", "silent": "ничего не слышно",
        "break": "обрыв датчика", "error": "ошибка датчика", "dropped": "показаний потеряно (очередь переполнена)",
        "acknowledged_by": "подтвердил(а)", "test_title": "проверка",
        "test_body": "Это проверка канала оповещений kubmesh. Если вы это читаете, канал работает.",
    },
}
BIT_LABEL = re.compile(r"^(alarm|warning) bit (\d+)$")
BIT_WORDS = {"ru": {"alarm": "авария, бит", "warning": "предупреждение, бит"},
             "en": {"alarm": "alarm bit", "warning": "warning bit"}}


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    severity: Severity
    farm_id: str | None
    alert_ids: tuple[str, ...]


@dataclass(frozen=True)
class Reader:
    language: str = "ru"
    timezone: str | None = None

    def zone(self) -> tzinfo | None:
        if not self.timezone:
            return None
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return None


def compose(farm_id: str, farm_name: str | None, *, new: Sequence[Alert] = (), reminded: Sequence[Alert] = (),
            cleared: Sequence[Alert] = (), reader: Reader, book: RuleBook, link: str | None) -> Message:
    words = WORDS.get(reader.language, WORDS["en"])
    alerts = [*new, *reminded, *cleared]
    ongoing = [*new, *reminded]
    severity = max((a.severity for a in ongoing), key=lambda s: s.rank, default=Severity.WARNING)
    name = farm_name or farm_id
    if ongoing:
        tag = words["critical"] if severity is Severity.CRITICAL else words["warning"]
        what = describe(ongoing[0], reader.language, book) if len(ongoing) == 1 else f"{len(ongoing)} {words['alerts']}"
        title = f"[{tag}] {name}: {what}"
    else:
        title = f"{name}: {words['all_clear_title']}"
    lines = [f"{name} ({farm_id})" if farm_name else farm_id]
    for heading, group in (("new", new), ("reminder", reminded), ("cleared", cleared)):
        for alert in group:
            lines.append(f"{words[heading]}: {_line(alert, heading == 'cleared', reader, book)}")
    if ongoing and link:
        lines.append(f"{words['open']}: {link}")
    return Message(title, "\n".join(lines), severity, farm_id, tuple(a.id for a in alerts))


def test_message(reader: Reader) -> Message:
    words = WORDS.get(reader.language, WORDS["en"])
    return Message(f"kubmesh: {words['test_title']}", words["test_body"], Severity.WARNING, None, ())


def describe(alert: Alert, language: str, book: RuleBook) -> str:
    """What happened, in one phrase: the kind's title and its subject."""
    words = WORDS.get(language, WORDS["en"])
    kind = book.kinds.get(alert.kind)
    title = kind.title.get(language) if kind else alert.kind
    if alert.kind in ("alarm", "warning"):
        return f"{title}: {bit_label(alert.subject, language)}"
    if alert.kind == "farm_silent":
        return f"{title} ({words.get(alert.subject, alert.subject)})"
    if alert.kind == "sensor_fault":
        return f"{title}: {alert.subject} — {words.get(alert.limit or '', alert.limit or '')}"
    if alert.kind == "backlog_dropped":
        count = "" if alert.value is None else f"{alert.value:g} "
        return f"{title}: {count}{words['dropped']}"
    if alert.kind == "value_rule":
        rule = next((r for r in book.rules if r.name == alert.subject), None)
        label = rule.label.get(language) if rule and rule.label else (rule.value if rule else alert.subject)
        return f"{label} {alert.limit or ''}".strip()
    return title


def bit_label(label: str, language: str) -> str:
    """A controller's bit label in the reader's language; a profile's own labels are shown as they are."""
    match = BIT_LABEL.fullmatch(label)
    if match is None:
        return label
    return f"{BIT_WORDS.get(language, BIT_WORDS['en'])[match[1]]} {match[2]}"


def _line(alert: Alert, cleared: bool, reader: Reader, book: RuleBook) -> str:
    words = WORDS.get(reader.language, WORDS["en"])
    parts = [describe(alert, reader.language, book), f"{words['since']} {_time(alert.since, reader)}"]
    if alert.value is not None and alert.kind == "value_rule":
        parts.append(f"{words['value']} {alert.value:g}{' ' + alert.unit if alert.unit else ''}")
    if alert.acknowledged_by:
        parts.append(f"{words['acknowledged_by']} {alert.acknowledged_by}")
    if cleared and alert.cleared:
        parts.append(f"{words['cleared_at']} {_time(alert.cleared, reader)}")
    return ", ".join(parts)


def _time(moment: datetime, reader: Reader) -> str:
    local = moment.astimezone(reader.zone())
    return local.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
