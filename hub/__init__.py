"""interop-hub: the engine. Public names for adapters, mappings and embedders."""

from hub.errors import (
    ConfigError,
    DeliveryError,
    HubError,
    MappingError,
    MessageError,
    NotConnected,
    Outcome,
    ParseError,
    Rejected,
    Retryable,
    StoreError,
    TooLarge,
    Unreachable,
    ValidationError,
)
from hub.message import Message, new_id
from hub.registry import ComponentConfig, register
from hub.replies import PeerReply, ReplyKind

__all__ = [
    "ComponentConfig",
    "ConfigError",
    "DeliveryError",
    "HubError",
    "MappingError",
    "Message",
    "MessageError",
    "NotConnected",
    "Outcome",
    "ParseError",
    "PeerReply",
    "Rejected",
    "ReplyKind",
    "Retryable",
    "StoreError",
    "TooLarge",
    "Unreachable",
    "ValidationError",
    "new_id",
    "register",
]
