"""What `environment: production` refuses at load (so `hub check` and `hub serve` both refuse it).

* **An audit key made by the hub itself.** The audit chain's HMAC key must be
  given (``audit.key`` or ``audit.key_file``), kept where the database's
  administrators cannot read it.
* **Sandboxes.** They stand in for national services and peers, answer from
  fixtures and hold what they received: never beside real traffic.
* **Test identities.** A component whose own ``environment`` is not
  ``production`` would accept the INS test (.10) and demonstration (.11) roots
  (DOMAIN.md §9.1).
* **Development certificates.** Certificates made by :mod:`hub.devpki` (or the
  MSSanté peer sandbox) are recognised by their issuer's organisation; they
  stand in for IGC-Santé certificates and must not be trusted in production.
* **Unauthenticated listeners beyond loopback.** MLLP without mutual TLS, the
  SMTP MTA port without client certificates, and the HTTP port (FHIR intake,
  admin tokens) without TLS — or, with a FHIR intake, without mutual TLS —
  bound to anything but a loopback address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import BaseModel

from hub.devpki import DEV_ORGANIZATIONS
from hub.environments import HubEnvironment
from hub.tls import TlsConfig

__all__ = ["is_dev_certificate", "production_problems"]


def production_problems(
    hub: Any, component_configs: Mapping[tuple[str, str], BaseModel], where: Any
) -> list[str]:
    """Every reason this configuration may not run in production (empty outside production).

    `hub` is the HubConfig, `where(path)` turns a config path into ``file:line``.
    """
    if hub.environment != HubEnvironment.PRODUCTION:
        return []
    problems = []
    if hub.audit.key is None and hub.audit.key_file is None:
        problems.append(f"{where(('audit',))}: audit: give audit.key or audit.key_file (the audit chain's HMAC key)")
    for name in hub.sandboxes:
        problems.append(f"{where(('sandboxes', name))}: sandboxes.{name}: no sandbox runs in production")
    sections = {"inbound": "listeners", "outbound": "endpoints"}
    for (kind, name), config in component_configs.items():
        if kind not in sections:
            continue
        section = sections[kind]
        for path, node in _walk(config, (section, name)):
            value = getattr(node, "value", node)  # a str Enum, or a str
            if path[-1] == "environment" and isinstance(value, str) and value != "production":
                dotted = ".".join(str(p) for p in path)
                problems.append(f"{where(path)}: {dotted}: {value!r} accepts test identities; set production")
            elif isinstance(node, TlsConfig):
                problems += _dev_cert_problems(node, path, where)
        if kind == "inbound":
            problems += _unauthenticated(hub, section, name, config, where)
    if hub.http.tls is not None:
        problems += _dev_cert_problems(hub.http.tls, ("http", "tls"), where)
    problems += _http_problems(hub, component_configs, where)
    return problems


def _walk(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every value of a config, nested ones included, with its path."""
    yield path, node
    if isinstance(node, BaseModel):
        for field in type(node).model_fields:
            yield from _walk(getattr(node, field), (*path, field))
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, i))


def is_dev_certificate(pem_file: str) -> bool:
    """True when a certificate of the PEM file was issued by a development or test PKI of this project."""
    try:
        certs = x509.load_pem_x509_certificates(Path(pem_file).read_bytes())
    except (OSError, ValueError):
        return False  # unreadable files are reported when the TLS context is built
    for cert in certs:
        for name in (cert.issuer, cert.subject):
            orgs = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
            if any(str(o.value) in DEV_ORGANIZATIONS for o in orgs):
                return True
    return False


def _dev_cert_problems(tls: TlsConfig, path: tuple[Any, ...], where: Any) -> list[str]:
    out = []
    for field in ("cert_file", "ca_file"):
        value = getattr(tls, field)
        if value and is_dev_certificate(value):
            dotted = ".".join(str(p) for p in (*path, field))
            out.append(f"{where((*path, field))}: {dotted}: a development/test certificate, not IGC-Santé")
    return out


def _loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "", 0.0.0.0 or a name: beyond loopback


def _unauthenticated(hub: Any, section: str, name: str, config: Any, where: Any) -> list[str]:
    listen = getattr(config, "listen", None)
    if not isinstance(listen, str) or _loopback(listen):
        return []
    kind = hub.listeners[name].type
    tls = getattr(config, "tls", None)
    if kind == "mllp" and not (tls is not None and tls.require_client_cert):
        why = "MLLP without mutual TLS (tls.require_client_cert)"
    elif kind == "smtp_mta" and not getattr(config, "require_client_cert", True):
        why = "the MTA port without client certificates (require_client_cert)"
    else:
        return []
    return [f"{where((section, name, 'listen'))}: {section}.{name}.listen: {why} bound beyond loopback"]


def _http_problems(hub: Any, component_configs: Mapping[tuple[str, str], BaseModel], where: Any) -> list[str]:
    if not hub.http.enabled or _loopback(hub.http.listen):
        return []
    fhir = [n for (kind, n) in component_configs if kind == "inbound" and hub.listeners[n].type == "fhir"]
    tls = hub.http.tls
    if tls is None:
        why = "plain HTTP (admin tokens and any intake in clear)"
    elif fhir and not tls.require_client_cert:
        why = f"FHIR intake ({', '.join(fhir)}) without mutual TLS (http.tls.require_client_cert)"
    else:
        return []
    return [f"{where(('http', 'listen'))}: http.listen: {why} bound beyond loopback"]
