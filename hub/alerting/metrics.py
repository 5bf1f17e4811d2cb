"""Metrics that let Prometheus alert on what the hub's own rules watch: listeners up, certificates' expiry.

``hub_listener_up{listener}`` is 1 while the listener accepts connections;
``hub_certificate_expiry_seconds{file}`` is the time left before each configured
certificate expires (negative once expired). Certificates are read again only
when their file changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.alerting.engine import certificate_files

if TYPE_CHECKING:
    from hub.runtime import Hub

__all__ = ["OperationsCollector"]


class OperationsCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._certs: dict[str, tuple[float, datetime | None]] = {}

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hub_listener_up", "1 while the listener accepts connections.", labels=["listener"])
        for name, listener in sorted(self.hub.listeners.items()):
            serving = getattr(listener, "is_serving", None)
            up.add_metric([name], 1.0 if serving is None or serving() else 0.0)
        yield up
        expiry = GaugeMetricFamily(
            "hub_certificate_expiry_seconds", "Seconds before a configured certificate expires.", labels=["file"]
        )
        now = datetime.now(UTC)
        for path in certificate_files(self.hub):
            not_after = self._not_after(path)
            if not_after is not None:
                expiry.add_metric([path], (not_after - now).total_seconds())
        yield expiry

    def _not_after(self, path: str) -> datetime | None:
        from cryptography import x509

        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None
        cached = self._certs.get(path)
        if cached is None or cached[0] != mtime:
            try:
                value: Any = x509.load_pem_x509_certificate(Path(path).read_bytes()).not_valid_after_utc
            except (OSError, ValueError):
                value = None
            self._certs[path] = cached = (mtime, value)
        return cached[1]
