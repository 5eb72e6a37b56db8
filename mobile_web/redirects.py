"""The one rule for redirecting within the site (after login, and wherever a target comes from a request).

A target is kept only if it is a path of this site as every browser reads it: printable ASCII with
no backslash (browsers read ``/\\host`` as ``//host``), no control character (browsers drop tabs and
newlines from a URL, so ``/\\t/host`` becomes ``//host``; CR/LF would split the header), starting with
one ``/``, and with neither a scheme nor a host once parsed. Anything else goes to the default.
"""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_TARGET = 2048


def local_target(target: str | None, default: str = "/") -> str:
    if not target or len(target) > MAX_TARGET:
        return default
    if any(not 0x21 <= ord(char) <= 0x7E or char == "\\" for char in target):
        return default
    if not target.startswith("/") or target.startswith("//"):
        return default
    try:
        parts = urlsplit(target)
    except ValueError:
        return default
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return default
    return target
