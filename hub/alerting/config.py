"""The `alerts` section of the config: rules (what to watch) and channels (where to say it).

```yaml
alerts:
  check_secs: 30
  renotify_secs: 3600
  channels:
    ops_hook: {type: webhook, url: "https://chat.example/hooks/${HUB_HOOK_ID}"}
    ops_mail: {type: mail, smtp: "smtp.example:587", from_address: hub@example.org, to: [astreinte@example.org]}
  rules:
    - {name: dmp-down, when: destination_down, destination: dmp, over: 5}
    - {name: dead-letters, when: dead_letters}
    - {name: backlog, when: queue_age, over: 15}
```
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_OVER", "AlertRule", "AlertsConfig", "MailChannel", "RuleKind", "WebhookChannel"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


RuleKind = Literal[
    "dead_letters", "queue_depth", "queue_age", "destination_down", "reviews_waiting", "listener_down",
    "store_down", "certificate_expiry",
]  # fmt: skip

#: The limit of each kind when a rule gives none (count, minutes or days; see AlertRule.over).
DEFAULT_OVER: dict[str, float] = {
    "dead_letters": 1, "queue_depth": 1000, "queue_age": 15, "destination_down": 5, "reviews_waiting": 1,
    "listener_down": 0, "store_down": 0, "certificate_expiry": 30,
}  # fmt: skip


class WebhookChannel(_Model):
    type: Literal["webhook"] = Field(description="POST one JSON object per notice (firing or resolved).")
    url: str = Field(pattern=r"^https?://", description="Where to POST; may hold `${ENV}` references.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers, e.g. `Authorization: Bearer ${HUB_HOOK_TOKEN}`."
    )
    ca_file: str | None = Field(None, description="Trust anchors for an https URL (system store when unset).")
    timeout_secs: float = Field(10.0, gt=0, description="Give up on one POST after this (retried at the next check).")


class MailChannel(_Model):
    type: Literal["mail"] = Field(description="Send one mail per notice through an SMTP relay.")
    smtp: str = Field(pattern=r"^[^:\s]+:\d+$", description="host:port of the relay (submission, 587, or 25).")
    from_address: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", description="Envelope and header sender.")
    to: list[str] = Field(min_length=1, description="Recipients (the on-call team's addresses).")
    starttls: bool = Field(True, description="Require STARTTLS before sending (false only for a relay on loopback).")
    username: str | None = Field(None, description="SMTP AUTH user, e.g. `${HUB_ALERT_SMTP_USER}`.")
    password: str | None = Field(None, description="SMTP AUTH password, from the environment (`${...}`).")
    ca_file: str | None = Field(
        None, description="Trust anchors for the relay's certificate (system store when unset)."
    )
    timeout_secs: float = Field(30.0, gt=0, description="Give up on one mail after this (retried at the next check).")


Channel = Annotated[WebhookChannel | MailChannel, Field(discriminator="type")]


class AlertRule(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique name, shown in every notice.")
    when: RuleKind = Field(
        description="dead_letters (a queue holds dead letters), queue_depth, queue_age (its oldest waiting "
        "delivery), destination_down (unreachable), reviews_waiting (identity reviews open), listener_down "
        "(not accepting connections), store_down (no answer within 2 s), certificate_expiry (a configured "
        "certificate expires soon)."
    )
    over: float | None = Field(
        None,
        ge=0,
        description="The limit: a count for dead_letters (default 1), queue_depth (1000) and reviews_waiting (1); "
        "minutes for queue_age (15) and destination_down (5); days left for certificate_expiry (30).",
    )
    route: str | None = Field(None, description="Only this route's queues (queue rules).")
    destination: str | None = Field(None, description="Only this destination's queues (queue rules).")
    severity: Literal["critical", "warning"] = Field("critical", description="Shown in the notice.")
    channels: list[str] | None = Field(None, description="Channel names; unset: every channel.")

    @property
    def limit(self) -> float:
        return DEFAULT_OVER[self.when] if self.over is None else self.over


class AlertsConfig(_Model):
    check_secs: float = Field(30.0, gt=0, description="How often the rules are evaluated.")
    renotify_secs: float = Field(
        3600.0, ge=0, description="Repeat a notice for a condition still true after this long; 0: never repeat."
    )
    channels: dict[str, Channel] = Field(default_factory=dict, description="Where notices go, by name.")
    rules: list[AlertRule] = Field(default_factory=list, description="What to watch; none: no alerting.")

    @model_validator(mode="after")
    def _references(self) -> AlertsConfig:
        names = [r.name for r in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names used twice: {', '.join(twice)}")
        for rule in self.rules:
            unknown = sorted(set(rule.channels or ()) - set(self.channels))
            if unknown:
                raise ValueError(f"rule {rule.name!r}: unknown channel(s) {', '.join(unknown)}")
        if self.rules and not self.channels:
            raise ValueError("rules without any channel: add a webhook or mail channel")
        return self
