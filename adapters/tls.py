"""TLS settings for adapters: the hub's own (`hub.tls`), re-exported where adapters have always found them."""

from hub.tls import TlsConfig, client_context, server_context

__all__ = ["TlsConfig", "client_context", "server_context"]
