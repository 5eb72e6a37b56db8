"""The kinds of alert and their default severities, kept as data in ``kinds.yaml``."""

from __future__ import annotations

import functools
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

KINDS_FILE = Path(__file__).with_name("kinds.yaml")
LANGUAGES = ("en", "ru")


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return 2 if self is Severity.CRITICAL else 1


class Text(BaseModel):
    """A short text in both languages of the system."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    en: str
    ru: str

    def get(self, language: str) -> str:
        return self.ru if language == "ru" else self.en


class Kind(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    severity: Severity
    title: Text
    latching: bool = False  # an event rather than a state: it holds until acknowledged


class KindOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    severity: Severity


class KindsError(ValueError):
    """A kinds table that cannot be used; the message names the file and the key."""


@functools.cache
def default_kinds() -> dict[str, Kind]:
    document = yaml.safe_load(KINDS_FILE.read_text(encoding="utf-8"))
    return {name: Kind.model_validate(kind) for name, kind in document["kinds"].items()}


def with_overrides(overrides: dict[str, Any], source: str) -> dict[str, Kind]:
    """The shipped kinds with the severities of a rules file's ``kinds:`` section."""
    kinds = dict(default_kinds())
    for name, override in overrides.items():
        if name not in kinds:
            raise KindsError(f"{source}: kinds: unknown kind {name!r} (known: {', '.join(sorted(kinds))})")
        try:
            severity = KindOverride.model_validate(override).severity
        except ValidationError as exc:
            raise KindsError(f"{source}: kinds.{name}: {exc.errors(include_url=False)[0]['msg']}") from None
        kinds[name] = kinds[name].model_copy(update={"severity": severity})
    return kinds
