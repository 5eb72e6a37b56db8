"""Reading the discovery node's REST API from the web: one GET, bounded in time and size, validated by its model."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
TIMEOUT_S = 5.0
MAX_BODY = 2 * 1024 * 1024


class DiscoveryUnavailable(Exception):
    """The discovery node could not be asked, or answered something unusable."""


def get_answer(base_url: str, token: str | None, path: str, model: type[M], what: str,
               error: type[DiscoveryUnavailable] = DiscoveryUnavailable) -> M:
    """``GET {base_url}{path}`` as ``model``, or ``error`` saying why not (``what`` names the answer expected)."""
    url = f"{base_url.rstrip('/')}{path}"
    headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as answer:
            body = answer.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        raise error(f"the discovery API answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise error(f"the discovery API is unreachable: {exc}") from None
    if len(body) > MAX_BODY:
        raise error("the discovery API's answer is too large")
    try:
        return model.model_validate_json(body)  # pydantic's parser: no Python recursion on deep nesting
    except ValidationError as exc:
        raise error(f"the discovery API's answer is not {what}: {exc}") from None
