"""Each user's choices that follow them from one phone to another: for now, the page language.

Kept in ``web_preferences.json`` in the data dir, replaced atomically, read again when it changes.
A cookie alone would lose the choice with a new phone, a cleared browser or a second device.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("kubmesh.web.preferences")

FILE_NAME = "web_preferences.json"


class Preferences:
    def __init__(self, data_dir: Path, languages: tuple[str, ...]) -> None:
        self.path = data_dir / FILE_NAME
        self.languages = languages
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, dict[str, str]] = {}

    def language(self, username: str) -> str | None:
        chosen = self._load().get(username, {}).get("language")
        return chosen if chosen in self.languages else None

    def set_language(self, username: str, language: str) -> None:
        if language not in self.languages:
            raise ValueError(f"unknown language {language!r}")
        with self._lock:
            data = dict(self._load())
            data[username] = {**data.get(username, {}), "language": language}
            self._write(data)

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp != self._stamp:
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:  # a broken file costs the choices, never a page
                log.warning("ignoring unreadable %s: %s", self.path, exc)
                loaded = {}
            self._data = {name: entry for name, entry in loaded.items() if isinstance(entry, dict)} \
                if isinstance(loaded, dict) else {}
            self._stamp = stamp
        return self._data

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)
        self._data, self._stamp = data, None
