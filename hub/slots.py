"""A fair share of a listener's connection slots, so that idle or abusive peers cannot lock real senders out.

Each listener has ``max_connections`` slots. A connection is *unproven* until
it has done what a real sender does at once (MLLP: a frame answered AA; SMTP
MTA: a MAIL FROM accepted after STARTTLS with its certificate; submission: a
successful AUTH), and *proven* after. Three rules (the idea of OpenSSH's
``MaxStartups`` and of Postfix's ``smtpd_client_connection_count_limit``):

* one peer address holds at most ``max_connections_per_peer`` slots;
* when the listener (or the peer's share) is full, the newcomer takes the
  slot of the **oldest unproven** connection, which is closed: a crowd of idle
  connections costs a real sender nothing, since it proves itself within
  milliseconds of connecting while the crowd never does;
* only when every slot is held by a proven connection is the newcomer refused.

The listeners also give an unproven connection a short time limit (the first
frame, the TLS handshake and login) and the long one only once proven.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

__all__ = ["Slot", "Slots"]


@dataclasses.dataclass(eq=False, slots=True)
class Slot:
    """One admitted connection; `release` it when the connection ends (twice is harmless)."""

    peer: str
    close: Callable[[], None]
    owner: Slots
    number: int
    proven: bool = False

    def prove(self) -> None:
        """The connection did what a real sender does: it may no longer be evicted."""
        self.proven = True

    def release(self) -> None:
        self.owner._release(self)


class Slots:
    """The slots of one listener: admission, per-peer caps and eviction of the oldest unproven connection."""

    def __init__(self, *, max_connections: int, max_per_peer: int) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self._open: dict[int, Slot] = {}  # insertion order = age
        self._per_peer: dict[str, int] = {}
        self._numbers = itertools.count(1)
        self.admitted = 0
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._open)

    def count(self, peer: str) -> int:
        return self._per_peer.get(peer, 0)

    def admit(self, peer: str, close: Callable[[], None]) -> Slot | None:
        """A slot for a new connection from `peer` (evicting an unproven one if needed), or None: refuse it.

        `close` ends the connection; it is called (once) if this connection is later evicted.
        """
        if self.count(peer) >= self.max_per_peer and not self._evict(peer):
            self.refused += 1
            return None
        if len(self._open) >= self.max_connections and not self._evict(None):
            self.refused += 1
            return None
        slot = Slot(peer=peer, close=close, owner=self, number=next(self._numbers))
        self._open[slot.number] = slot
        self._per_peer[peer] = self.count(peer) + 1
        self.admitted += 1
        return slot

    def _evict(self, peer: str | None) -> bool:
        victim = next((s for s in self._open.values() if not s.proven and peer in (None, s.peer)), None)
        if victim is None:
            return False
        self._release(victim)
        self.evicted += 1
        victim.close()
        return True

    def _release(self, slot: Slot) -> None:
        if self._open.pop(slot.number, None) is None:
            return
        left = self._per_peer[slot.peer] - 1
        if left:
            self._per_peer[slot.peer] = left
        else:
            del self._per_peer[slot.peer]
