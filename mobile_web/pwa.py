"""The installable app: the web manifest, the service worker and the offline page it falls back to.

The service worker is served from ``/sw.js`` (not ``/static/``) so that its scope is the whole
site. Its cache name carries a hash of the shell's files, so a new release replaces the cached
shell on the next visit.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, jsonify, render_template, url_for
from flask_babel import gettext as _

bp = Blueprint("pwa", __name__)
STATIC = Path(__file__).parent / "static"
SHELL_FILES = ("style.css", "app.js", "icon.svg", "icon-192.png", "icon-512.png")
THEME = "#14532d"


@cache
def shell_version() -> str:
    digest = hashlib.sha256()
    for name in (*SHELL_FILES, "sw.js"):
        digest.update((STATIC / name).read_bytes())
    return digest.hexdigest()[:12]


@bp.get("/manifest.webmanifest")
def manifest() -> Response:
    response = jsonify({
        "name": "kubmesh",
        "short_name": "kubmesh",
        "description": _("Your farms' climate, live"),
        "start_url": url_for("farms.index"),
        "scope": "/",
        "display": "standalone",
        "background_color": "#f4f6f3",
        "theme_color": THEME,
        "icons": [
            {"src": url_for("static", filename="icon-192.png"), "sizes": "192x192", "type": "image/png",
             "purpose": "any maskable"},
            {"src": url_for("static", filename="icon-512.png"), "sizes": "512x512", "type": "image/png",
             "purpose": "any maskable"},
            {"src": url_for("static", filename="icon.svg"), "sizes": "any", "type": "image/svg+xml"},
        ],
    })
    response.mimetype = "application/manifest+json"
    return response


@bp.get("/sw.js")
def service_worker() -> Response:
    shell = [url_for("pwa.offline"), url_for("pwa.manifest")] + [url_for("static", filename=f) for f in SHELL_FILES]
    prelude = (f"const VERSION = {json.dumps(shell_version())};\nconst SHELL = {json.dumps(shell)};\n"
               f"const OFFLINE = {json.dumps(shell[0])};\n")
    response = Response(prelude + (STATIC / "sw.js").read_text(), mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/offline")
def offline() -> str:
    """What the service worker shows when a page cannot be loaded: the shell, saying it is offline."""
    return render_template("offline.html", shell_only=True)
