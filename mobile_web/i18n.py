"""Languages: the shipped ``.po`` catalogs, compiled at start into the data dir for Flask-Babel."""

from __future__ import annotations

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
