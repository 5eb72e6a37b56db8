"""The discovery REST API's answers that the web reads, validated before use.

Only the history answer for now. These are the web's own copy of the API's response models: when
the contract carries the REST models, this module becomes an import of them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from contract.payloads import Timestamp


class HistoryPoint(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)  # the chart's JSON has no Infinity

    ts: Timestamp
    value: float | None = None
    min: float | None = None
    max: float | None = None


class History(BaseModel):
    """``GET /api/farms/{farm}/history``: ``{"farm", "name", "points": [{"ts", "value", "min", "max", "avg"}]}``."""

    model_config = ConfigDict(extra="ignore")

    farm: str
    name: str
    points: list[HistoryPoint]
