"""A farm's history as a spreadsheet: CSV that Excel and LibreOffice open as they are.

One row per moment, one column per value, times in the reader's time zone. The file starts with
a UTF-8 byte order mark, without which Excel reads UTF-8 as the system's code page (Cyrillic
headers would come out garbled). The decimal mark is the reader's: ``.`` with ``,`` between
fields (English), or ``,`` with ``;`` between fields (Russian, as Excel expects in a locale whose
decimal mark is a comma). Used by the discovery REST API and the web alike, so both files agree.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

BOM = "\ufeff"
DecimalMark = Literal[".", ","]
Series = Mapping[str, Iterable[tuple[datetime, float | None]]]
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # what spreadsheets read as a date and time in every locale


class BadTimeZone(ValueError):
    """A time zone name the system's database does not know."""


def time_zone(name: str) -> ZoneInfo:
    """``Europe/Moscow`` as a time zone, or :class:`BadTimeZone`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadTimeZone(f"unknown time zone {name!r}: use a name such as Europe/Moscow or UTC") from None


def separator(decimal: DecimalMark) -> str:
    return ";" if decimal == "," else ","


def history_csv(series: Series, zone: tzinfo, *, headers: Mapping[str, str] | None = None,
                decimals: Mapping[str, int] | None = None, decimal: DecimalMark = ".",
                time_header: str = "time") -> bytes:
    """The CSV file of ``series`` (value name → its points); a value missing at a moment is an empty cell."""
    rows: dict[datetime, dict[str, float | None]] = {}
    for name, points in series.items():
        for moment, value in points:
            rows.setdefault(moment, {})[name] = value
    names = list(series)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator(decimal), lineterminator="\r\n")
    writer.writerow([f"{time_header} ({zone})", *((headers or {}).get(name, name) for name in names)])
    for moment in sorted(rows):
        cells = [_number(rows[moment].get(name), (decimals or {}).get(name), decimal) for name in names]
        writer.writerow([moment.astimezone(zone).strftime(TIME_FORMAT), *cells])
    return (BOM + out.getvalue()).encode("utf-8")


def _number(value: float | None, decimals: int | None, decimal: DecimalMark) -> str:
    if value is None:
        return ""
    text = f"{value:.{decimals}f}" if decimals is not None else f"{value:.6f}".rstrip("0").rstrip(".")
    return text.replace(".", decimal)
