"""Languages: the shipped ``.po`` catalogs, compiled at start into the data dir for Flask-Babel, and the
browser's ``Accept-Language`` read as RFC 9110 says (q-values, region subtags)."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

CATALOGS = Path(__file__).parent / "translations"


def compile_catalogs(target: Path) -> Path:
    """Write ``LANG/LC_MESSAGES/messages.mo`` under ``target`` for every shipped ``.po``; return ``target``."""
    for po_path in CATALOGS.glob("*/LC_MESSAGES/messages.po"):
        mo_path = target / po_path.relative_to(CATALOGS).with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        mo_path.parent.mkdir(parents=True, exist_ok=True)
        with po_path.open("rb") as source:
            catalog = read_po(source, locale=po_path.parts[-3])
        with mo_path.open("wb") as out:
            write_mo(out, catalog)
    return target


_RANGE = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")


def best_language(header: str | None, supported: tuple[str, ...], default: str) -> str:
    """The supported language the browser prefers most: ``ru-RU;q=0.9,en;q=0.1`` is Russian.

    Each range counts with its q-value and by its primary subtag (``ru-RU`` asks for ``ru``), the
    higher q winning and, at equal q, the one written first; ``q=0`` refuses a language; ``*`` is
    the first supported one not refused. Werkzeug's ``best_match`` prefers any exact match to a
    region one however low its q, which put a Russian-first phone that also lists ``en`` in English.
    """
    wanted: list[tuple[float, int, str]] = []
    refused: set[str] = set()
    for index, part in enumerate((header or "").split(",")[:32]):
        match = _RANGE.match(part)
        if not match:
            continue
        primary = match.group(1).split("-")[0].lower()
        quality = float(match.group(2)) if match.group(2) else 1.0
        if quality <= 0:
            refused.add(primary)
        else:
            wanted.append((-quality, index, primary))
    for _, _, primary in sorted(wanted):
        if primary == "*":
            return next((language for language in supported if language not in refused), default)
        if primary in supported and primary not in refused:
            return primary
    return default
