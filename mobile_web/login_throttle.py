"""Who is logging in from where, and how long a failed login makes the next one wait.

Two rules, so that a guesser cannot lock an owner out:

- a hard limit (``login_limit``, answered with 429) per (client address, username): a guesser is
  stopped for the account it guesses, from its own address only; the owner's phone, from another
  address, still logs in;
- a soft delay per username and per address that grows with their recent failures (the first few
  cost nothing, then 0.25 s doubling up to ``login_delay_max_s``): it slows a guesser spread over
  many addresses or many accounts, and a right password still gets in after it.

Loopback is not exempt. The client address is the connection's, unless the connection comes from a
proxy in ``trusted_proxies`` (e.g. ``127.0.0.1`` for ``tailscale serve`` on the same host, which makes
every caller loopback): then it is the last address in ``X-Forwarded-For`` that is not a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

FREE_FAILURES = 3  # failures in the window that cost no delay (a typo or two)
FIRST_DELAY_S = 0.25
WINDOW_S = 15 * 60.0
MAX_KEYS = 10_000  # the oldest keys are forgotten first: a flood of names cannot grow memory without end

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """``127.0.0.1``, ``::1`` or ``100.64.0.0/10``; a bad entry raises ``ValueError`` naming it."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {entry!r} is not an address or a network") from None
    return networks


def _trusted(address: str, proxies: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(remote_addr: str | None, forwarded_for: str | None, proxies: list[Network]) -> str:
    """The caller's address: the connection's, or what a trusted proxy says it forwarded."""
    address = remote_addr or "unknown"
    if not forwarded_for or not _trusted(address, proxies):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        try:
            hop = str(ipaddress.ip_address(hop))
        except ValueError:
            return address  # a hop that is not an address: the header cannot be trusted past it
        if not _trusted(hop, proxies):
            return hop
    return address


class LoginDelays:
    """Recent failed logins per key (``user:NAME``, ``addr:ADDRESS``) and the delay they cost the next login."""

    def __init__(self, max_delay_s: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.max_delay_s = max_delay_s
        self.clock = clock
        self.sleep = sleep  # cooperative under gevent, which patches time.sleep
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> int:
        times = self._failures.get(key)
        if times is None:
            return 0
        while times and now - times[0] > WINDOW_S:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return len(times)

    def delay(self, keys: Iterable[str]) -> float:
        """Seconds the next attempt waits: by the key with the most recent failures."""
        with self._lock:
            now = self.clock()
            worst = max((self._recent(key, now) for key in keys), default=0)
        if worst < FREE_FAILURES:
            return 0.0
        return min(self.max_delay_s, FIRST_DELAY_S * 2 ** (worst - FREE_FAILURES))

    def wait(self, keys: Iterable[str]) -> float:
        seconds = self.delay(keys)
        if seconds > 0:
            self.sleep(seconds)
        return seconds

    def failed(self, keys: Iterable[str]) -> None:
        with self._lock:
            now = self.clock()
            for key in keys:
                times = self._failures.setdefault(key, deque(maxlen=64))
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)
