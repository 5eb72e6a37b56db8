"""Value rules: a farm's reading above or below a limit, or changing faster than a rate per hour.

Rules are data, read from a YAML rules file (the shipped ``kub1063_rules.yaml`` unless ALERT_RULES
names another); a bad file stops the node at start with a message naming the file and the rule.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.topics import FARM_ID_PATTERN, VALUE_NAME_PATTERN
from discovery.alerting.kinds import Kind, KindsError, Severity, Text, with_overrides

DEFAULT_RULES_FILE = Path(__file__).with_name("kub1063_rules.yaml")
Number = int | float


class ValueRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=VALUE_NAME_PATTERN.pattern)
    value: str = Field(pattern=VALUE_NAME_PATTERN.pattern)
    above: float | None = None
    below: float | None = None
    rate_per_hour: float | None = Field(None, gt=0)
    relative_to: str | None = Field(None, pattern=VALUE_NAME_PATTERN.pattern)
    window_s: float = Field(900.0, gt=0)  # the span a rate is measured over
    hysteresis: float = Field(0.0, ge=0)
    severity: Severity = Severity.WARNING
    farms: tuple[str, ...] = ()
    owner: str | None = None
    unit: str | None = None
    label: Text | None = None
    reason: str = ""

    @model_validator(mode="after")
    def _one_test(self) -> ValueRule:
        tests = [name for name in ("above", "below", "rate_per_hour") if getattr(self, name) is not None]
        if len(tests) != 1:
            raise ValueError("give exactly one of above, below or rate_per_hour")
        if self.relative_to and self.rate_per_hour is not None:
            raise ValueError("relative_to goes with above or below, not with rate_per_hour")
        for farm in self.farms:
            if not FARM_ID_PATTERN.fullmatch(farm):
                raise ValueError(f"invalid farm id {farm!r}")
        if self.farms and self.owner:
            raise ValueError("give farms or owner, not both")
        return self

    def applies_to(self, farm_id: str, owner: str | None) -> bool:
        if self.farms:
            return farm_id in self.farms
        return self.owner is None or self.owner == owner

    def limit_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.rate_per_hour is not None:
            return f"±{_number(self.rate_per_hour)}{unit}/h"
        sign, limit = (">", self.above) if self.above is not None else ("<", self.below)
        assert limit is not None
        if self.relative_to:
            return f"{sign} {self.relative_to} {'+' if limit >= 0 else '−'} {_number(abs(limit))}{unit}"
        return f"{sign} {_number(limit)}{unit}"


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: dict[str, Any] = Field(default_factory=dict)
    rules: list[ValueRule] = Field(default_factory=list)


@dataclass(frozen=True)
class RuleBook:
    kinds: dict[str, Kind]
    rules: tuple[ValueRule, ...]
    source: str = ""


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the rule and the reason."""


def load_rules(path: Path | None = None) -> RuleBook:
    path = path or DEFAULT_RULES_FILE
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RulesError(f"{path}: no such rules file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: not valid YAML ({exc})") from None
    try:
        parsed = _RulesFile.model_validate(document)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error.get("loc", ()))
        raise RulesError(f"{path}: {where}: {error['msg']}") from None
    names = [rule.name for rule in parsed.rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RulesError(f"{path}: rule names must be unique: {', '.join(duplicates)}")
    try:
        kinds = with_overrides(parsed.kinds, str(path))
    except KindsError as exc:
        raise RulesError(str(exc)) from None
    return RuleBook(kinds, tuple(parsed.rules), str(path))


@dataclass
class RuleWatch:
    """One rule on one farm: whether it holds, and the recent samples a rate is measured on."""

    rule: ValueRule
    holding: bool = False
    samples: collections.deque[tuple[datetime, float]] = field(default_factory=collections.deque)

    def check(self, values: Mapping[str, Number | None], ts: datetime) -> bool | None:
        """Whether the rule holds for this reading; None when the reading cannot say (a value missing)."""
        value = values.get(self.rule.value)
        if value is None:
            return None
        if self.rule.rate_per_hour is not None:
            verdict = self._rate_exceeded(float(value), ts)
        else:
            reference = 0.0
            if self.rule.relative_to:
                other = values.get(self.rule.relative_to)
                if other is None:
                    return None
                reference = float(other)
            verdict = self._beyond(float(value) - reference)
        if verdict is not None:
            self.holding = verdict
        return verdict

    def _beyond(self, offset: float) -> bool:
        back = self.rule.hysteresis if self.holding else 0.0
        if self.rule.above is not None:
            return offset > self.rule.above - back
        assert self.rule.below is not None
        return offset < self.rule.below + back

    def _rate_exceeded(self, value: float, ts: datetime) -> bool | None:
        window = self.rule.window_s
        if self.samples and ts <= self.samples[-1][0]:
            return None  # a replayed or repeated reading says nothing new about the rate
        self.samples.append((ts, value))
        while len(self.samples) > 2 and (ts - self.samples[1][0]).total_seconds() >= window:
            self.samples.popleft()
        first_ts, first = self.samples[0]
        span = (ts - first_ts).total_seconds()
        if span < window / 2:
            return None  # too short a span: two close readings' noise is no rate
        rate = abs(value - first) / (span / 3600)
        assert self.rule.rate_per_hour is not None
        back = self.rule.hysteresis if self.holding else 0.0
        return rate > self.rule.rate_per_hour - back

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (first_ts, first), (last_ts, last) = self.samples[0], self.samples[-1]
        span = (last_ts - first_ts).total_seconds()
        return (last - first) / (span / 3600) if span > 0 else None


def _number(value: float) -> str:
    return f"{value:g}"
