"""Alerts: rules in the config (`alerts:`), evaluated by each hub node, sent to a webhook and/or by mail.

See :mod:`hub.alerting.config` for the rules and channels, :mod:`hub.alerting.engine` for when a notice is
sent (firing, repeated, resolved). ``config/prometheus/hub-alerts.rules.yml`` states the same conditions as
Prometheus alerting rules over the hub's metrics, for sites that alert from Prometheus instead.
"""

from hub.alerting.config import AlertRule, AlertsConfig
from hub.alerting.engine import AlertEngine

__all__ = ["AlertEngine", "AlertRule", "AlertsConfig"]
