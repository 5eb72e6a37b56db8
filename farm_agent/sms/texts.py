"""The words of an SMS, in Russian (the default) or English.

A message is one line of short sentences, farm name first, so the phone's preview tells the story:
``Ферма «Птичник 2»: нет связи с сервером 6 мин, мониторинг отрезан от фермы. АВАРИЯ: авария (бит 3).``
It is kept within :data:`MAX_CHARS` (three linked parts in Cyrillic) by naming fewer alarms.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Notice = Literal["cut_off", "monitoring_down"]
Language = Literal["ru", "en"]

MAX_CHARS = 3 * 67  # three linked UCS-2 parts

_WORDS: dict[str, dict[str, str]] = {
    "ru": {
        "farm": "Ферма «{name}»: ",
        "cut_off": "нет связи с сервером {minutes} мин, мониторинг отрезан от фермы.",
        "monitoring_down": "сервер мониторинга не работает {minutes} мин, ферма на связи и пишет сама.",
        "alarms": "АВАРИЯ: {labels}.",
        "cleared": "Снято: {labels}.",
        "no_alarms": "Аварий нет.",
        "controller_down": "Контроллер не отвечает.",
        "controller_up": "Контроллер снова отвечает.",
        "more": "и ещё {count}",
        "alarm bit": "авария (бит {bit})",
        "warning bit": "предупреждение (бит {bit})",
    },
    "en": {
        "farm": "Farm {name}: ",
        "cut_off": "no link to the server for {minutes} min, monitoring is cut off from this farm.",
        "monitoring_down": "the monitoring server is down for {minutes} min; the farm is online and texts itself.",
        "alarms": "ALARM: {labels}.",
        "cleared": "Cleared: {labels}.",
        "no_alarms": "No alarms.",
        "controller_down": "The controller is not answering.",
        "controller_up": "The controller answers again.",
        "more": "and {count} more",
        "alarm bit": "alarm bit {bit}",
        "warning bit": "warning bit {bit}",
    },
}

_UNLABELLED = re.compile(r"^(alarm|warning) bit (\d+)$")  # the profile's name for a bit nobody has labelled


@dataclass(frozen=True)
class Story:
    """What one SMS tells: the farm, why it texts (once per outage), and what changed since it last texted."""

    farm_name: str
    notice: Notice | None = None
    minutes: int = 0  # how long monitoring has been cut off
    raised: Sequence[str] = ()  # alarm labels newly active
    cleared: Sequence[str] = ()  # alarm labels told before and no longer active
    controller: Literal["down", "up"] | None = None
    no_alarms: bool = False  # say so: the first message of an outage with nothing active


def compose(story: Story, language: Language) -> str:
    words = _WORDS[language]
    raised = [label_in(label, language) for label in story.raised]
    cleared = [label_in(label, language) for label in story.cleared]
    shown = len(raised)
    while True:
        text = _text(story, words, raised[:shown], len(raised) - shown, cleared)
        if len(text) <= MAX_CHARS or shown <= 1:
            return text[:MAX_CHARS]
        shown -= 1


def label_in(label: str, language: Language) -> str:
    match = _UNLABELLED.fullmatch(label)
    if match is None:
        return label
    return _WORDS[language][f"{match[1]} bit"].format(bit=match[2])


def _text(story: Story, words: dict[str, str], raised: list[str], hidden: int, cleared: list[str]) -> str:
    sentences = []
    if story.notice is not None:
        sentences.append(words[story.notice].format(minutes=story.minutes))
    if raised:
        labels = ", ".join(raised) + (" " + words["more"].format(count=hidden) if hidden else "")
        sentences.append(words["alarms"].format(labels=labels))
    if cleared:
        sentences.append(words["cleared"].format(labels=", ".join(cleared)))
    if story.controller is not None:
        sentences.append(words[f"controller_{story.controller}"])
    if story.no_alarms:
        sentences.append(words["no_alarms"])
    return words["farm"].format(name=story.farm_name) + " ".join(sentences)
