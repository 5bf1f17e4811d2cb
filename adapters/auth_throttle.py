"""Failed logins counted across connections, per login name and per peer address, to stop password guessing.

A guesser who reconnects after each refusal is not slowed by a per-connection
limit. Here every failure is remembered for ``window_secs``; once a login name
(or a peer address) has failed ``per_user`` (``per_peer``) times in that
window, further attempts are refused *without checking the password* until
old failures leave the window, so that guessing goes no faster than
``per_user`` tries per window whatever the number of connections or addresses.
A success clears the failures of that login (the real user mistyped), not
those of the address.

Memory is bounded: at most ``max_keys`` names and addresses are tracked, the
least recently failed forgotten first (a guesser cycling through random names
cannot grow it).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

__all__ = ["AuthThrottle"]


class AuthThrottle:
    def __init__(
        self,
        *,
        per_user: int,
        per_peer: int,
        window_secs: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user = per_user
        self.per_peer = per_peer
        self.window_secs = window_secs
        self.max_keys = max_keys
        self._clock = clock
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, key: str) -> int:
        times = self._failures.get(key)
        if times is None:
            return 0
        horizon = self._clock() - self.window_secs
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return len(times)

    def blocked(self, user: str, peer: str) -> bool:
        """True when this login name or this address has used up its failures for now."""
        return self._recent(f"u:{user}") >= self.per_user or self._recent(f"p:{peer}") >= self.per_peer

    def failed(self, user: str, peer: str) -> None:
        now = self._clock()
        for key in (f"u:{user}", f"p:{peer}"):
            times = self._failures.setdefault(key, collections.deque())
            times.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, user: str) -> None:
        self._failures.pop(f"u:{user}", None)
