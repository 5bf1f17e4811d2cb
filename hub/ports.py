"""The hub's ports: what adapters get from the hub, and what the hub expects of them.

The hub defines these protocols and adapters implement them (adapters import
``hub``; the hub never imports ``adapters``: it builds them from
:mod:`hub.registry`, typed by the protocols below).

Inbound adapters are servers: for each message they build a :class:`Message`
and ``await ctx.submit(...)``, which returns only after the durable commit;
only then do they acknowledge (AA / 2xx / 250). A message they refuse goes to
``ctx.reject(...)``, which stores it with its reason before the refusal is
sent. Either call raises :class:`hub.errors.Retryable` when the hub cannot
take the message now (store unavailable, above the high-water mark): the
adapter answers with its protocol's "try again" (AE / 503 / 451).

Outbound adapters classify: ``send`` returns on ACCEPT, raises
:class:`Retryable` (or :class:`NotConnected`) or :class:`Rejected`. They never
sleep, retry or persist; the delivery workers in ``hub/delivery.py`` do. What
the peer answered is a :class:`~hub.replies.PeerReply`: ``send`` returns it on
ACCEPT and attaches it to the error it raises when the peer answered
(``raise Rejected(...).with_reply(reply)``); the worker stores it with the attempt.

An outbound component registered with ``needs=("services",)`` is built as
``factory(name, config, services=...)`` with :class:`AdapterServices`: the
whole of what it may ask of the hub (today: the environment, and the identity
registry's write side). Nothing else of the hub reaches an adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from hub.identity_registry import ApplyResult, IdentityUpdate
from hub.message import Message
from hub.replies import PeerReply
from hub.store import SubmitResult

__all__ = [
    "AdapterServices", "IdentityUpdates", "InboundAdapter", "InboundContext", "OutboundAdapter", "PeerReply", "Sandbox",
]  # fmt: skip


class InboundContext(Protocol):
    """The hub as an inbound adapter sees it, bound to one listener name."""

    endpoint: str

    async def submit(self, message: Message, *, dedup_key: str | None = None) -> SubmitResult:
        """Route and durably store; return after commit. Raises Retryable when the hub is full or down."""

    async def reject(self, message: Message, *, reason: str) -> None:
        """Durably store a refused message with its reason. Raises Retryable when the store is down."""

    async def audit(self, action: str, *, actor: str, outcome: str, detail: Mapping[str, str]) -> None:
        """Append an entry to the audit trail (a failed login, a refused identity); never raises."""


class InboundAdapter(Protocol):
    """A listener. Built as ``factory(name, config, ctx)`` with its :class:`InboundContext`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """Where it listens, for the startup log and `hub sandboxes`."""

    # Optional: an inbound adapter served on the hub's own HTTP port defines
    # `http_routes() -> list[(method, absolute path, aiohttp handler)]`; the hub mounts
    # them before start() and must not take a message until start() has run.


class OutboundAdapter(Protocol):
    """A destination. Built as ``factory(name, config)`` (``services=`` too when it needs them)."""

    async def start(self) -> None: ...

    async def send(self, message: Message) -> PeerReply | None:
        """Deliver one message; return the peer's reply on ACCEPT, raise Retryable / Rejected otherwise.

        The raised error carries the peer's reply when there was one (:attr:`DeliveryError.reply`).
        None: no reply to keep (an adapter written before replies were kept).
        """

    async def stop(self) -> None: ...

    # Optional: `describe() -> dict` (where it sends, for the dashboard).


class IdentityUpdates(Protocol):
    """The identity registry's write side (``hub/identity_registry.py``)."""

    async def apply(self, update: IdentityUpdate) -> ApplyResult:
        """Apply one update (history, merges, releasing held messages); StoreError when the store is down."""


class AdapterServices(Protocol):
    """What an outbound adapter built with ``needs=("services",)`` may ask of the hub; nothing more."""

    @property
    def environment(self) -> str:
        """The hub's environment (``production``, ``test``, ``development``): which INS roots are accepted."""

    @property
    def identity(self) -> IdentityUpdates:
        """Where identity updates go."""


class Sandbox(Protocol):
    """A local stand-in for a national service or a peer, started with the hub; built as ``factory(name, config)``."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def http_routes(self) -> list[tuple[str, str, Any]]:
        """(method, path, aiohttp handler) to mount under /sandboxes/<name>/ on the hub's HTTP port, behind the admin
        API's token (hub/admin/sandbox_guard.py: GET and `http_reads` need a viewer, other methods an operator)."""
