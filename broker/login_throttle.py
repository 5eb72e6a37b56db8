"""Failed MQTT logins slowed down, per source address and per username, and logged at a bounded rate.

- A source that failed :data:`FREE_FAILURES` times in a row waits before its next login is
  even looked at, twice as long after each further failure, up to ``max_delay_s``: a guesser on one
  address gets a few answers a minute, not hundreds a second. Loopback is not exempt: a proxy on the
  same host (``tailscale serve``) makes every caller loopback.
- A username with failures from anywhere gets its refusals late, the same way (the longer of the two
  delays applies); its right password is answered at once, so a guesser elsewhere cannot lock its
  owner out.
- A success clears the source's count (its owner typed the password wrong a few times); a count
  nobody adds to for ``forget_s`` is forgotten, and at most :data:`MAX_KEYS` are kept.
- The first failure of a source is logged; later ones are summed up in one line at most every
  :data:`LOG_EVERY_S` per source. The same for logins refused with the right credentials (a client id
  of another identity), which are not slowed.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("kubmesh.broker")

FREE_FAILURES = 3
FIRST_DELAY_S = 0.25
MAX_KEYS = 10_000
LOG_EVERY_S = 30.0


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    unlogged: int = 0
    logged_at: float = float("-inf")


class LoginThrottle:
    """The delays of the next login per source and the next refusal per username."""

    def __init__(self, max_delay_s: float = 30.0, forget_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_delay_s = max_delay_s
        self.forget_s = forget_s
        self.clock = clock
        self._sources: OrderedDict[str, _Failures] = OrderedDict()
        self._usernames: OrderedDict[str, _Failures] = OrderedDict()
        self._refusals: OrderedDict[str, _Failures] = OrderedDict()  # for their log lines only

    def before_login(self, source: str) -> float:
        """Seconds a login from ``source`` waits before its credentials are checked."""
        return self._delay(self._sources, source)

    def before_refusal(self, username: str) -> float:
        """Seconds a refused login for ``username`` waits for its answer."""
        return self._delay(self._usernames, username)

    def failed(self, source: str, username: str, reason: str) -> None:
        now = self.clock()
        failures = self._count(self._sources, source, now)
        self._count(self._usernames, username, now)
        self._log(failures, now, source, reason)

    def refused(self, source: str, reason: str) -> None:
        """A login with the right credentials refused for another reason: logged at the same bounded rate,
        and not slowed (it is no guess)."""
        now = self.clock()
        self._log(self._count(self._refusals, source, now), now, source, reason)

    @staticmethod
    def _log(failures: _Failures, now: float, source: str, reason: str) -> None:
        if failures.count == 1 or now - failures.logged_at >= LOG_EVERY_S:
            more = f" ({failures.unlogged} more from it since the last line)" if failures.unlogged else ""
            log.warning("refused a login from %s: %s%s", source, reason, more)
            failures.logged_at, failures.unlogged = now, 0
        else:
            failures.unlogged += 1

    def succeeded(self, source: str) -> None:
        self._sources.pop(source, None)

    def _delay(self, table: OrderedDict[str, _Failures], key: str) -> float:
        failures = table.get(key)
        if failures is None:
            return 0.0
        if self.clock() - failures.last > self.forget_s:
            del table[key]
            return 0.0
        if failures.count < FREE_FAILURES:
            return 0.0
        return float(min(self.max_delay_s, FIRST_DELAY_S * 2 ** (failures.count - FREE_FAILURES)))

    def _count(self, table: OrderedDict[str, _Failures], key: str, now: float) -> _Failures:
        failures = table.pop(key, None)
        if failures is None or now - failures.last > self.forget_s:
            failures = _Failures()
        failures.count += 1
        failures.last = now
        table[key] = failures  # the most recent last: the oldest go first when full
        while len(table) > MAX_KEYS:
            table.popitem(last=False)
        return failures
