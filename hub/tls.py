"""TLS settings shared by every listener and client (MLLP, HTTP, SMTP, XDS, FHIR)."""

from __future__ import annotations

import ssl

from pydantic import Field

from hub.registry import ComponentConfig

__all__ = ["TlsConfig", "client_context", "server_context"]


class TlsConfig(ComponentConfig):
    cert_file: str | None = Field(None, description="PEM certificate chain presented by this side.")
    key_file: str | None = Field(None, description="PEM private key of `cert_file`.")
    ca_file: str | None = Field(
        None, description="PEM trust anchors used to verify the peer (system store when unset, client side)."
    )
    require_client_cert: bool = Field(
        False,
        description="Server side: refuse clients without a certificate signed by `ca_file` (mutual TLS).",
    )
    verify: bool = Field(True, description="Client side: verify the server certificate and host name.")
    server_hostname: str | None = Field(None, description="Client side: name expected in the server certificate.")


def server_context(cfg: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not cfg.cert_file:
        raise ValueError("a TLS listener needs cert_file")
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if cfg.ca_file:
        ctx.load_verify_locations(cfg.ca_file)
    if cfg.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cfg: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
