"""structlog configuration: JSON lines, correlation ids, and a redaction processor.

No payload, name, birth date or NIR/INS may reach a log line. Two layers:

1. keys that carry payloads or identity (``body``, ``payload``, ``reply``, ``hl7``,
   ``resource``, ``name``, ``birth_date``, ``ins``...) are replaced whatever
   their value;
2. every other string value is scanned, and HL7 v2 segments, XML/JSON
   documents, runs of 13 to 15 digits (NIR, INS, NIA) and calendar dates are
   masked. Identifiers the hub generates (message and correlation ids) and
   the record's own timestamp are left alone.

Logs from the standard library (asyncio, aiohttp, asyncpg) go through the
same processors; the HTTP library's own lines lose their raw request bytes
(request line, headers, URL) first, since a URL can name a patient. Normal operation logs little: outcomes that need an
operator (dead letters, refusals, lost connections), and start/stop.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["configure", "library_requests", "redact", "redact_text"]

_SECRET_KEYS = frozenset(
    {
        "body",
        "payload",
        "reply",  # what a destination answered (hub/replies.py): an OperationOutcome may quote the patient
        "hl7",
        "resource",
        "raw",
        "document",
        "cda",
        "xml",
        "json_body",
        "name",
        "family",
        "given",
        "birth_name",
        "first_name",
        "birth_date",
        "birthdate",
        "dob",
        "nir",
        "nia",
        "ins",
        "traits",
        "patient",
        "address",
        "phone",
        "email",
    }
)
_SAFE_KEYS = frozenset(
    {"timestamp", "level", "logger", "event", "message_id", "correlation_id", "delivery_id", "parent_id"}
)
_PATTERNS = [
    (re.compile(r"(?:^|[\r\n])[A-Z][A-Z0-9]{2}\|.*", re.S), "[redacted:hl7]"),
    (re.compile(r"<\?xml.*|<[A-Za-z][\w:.-]*[\s>].*</.*", re.S), "[redacted:xml]"),
    (re.compile(r"\{\s*\"resourceType\".*", re.S), "[redacted:fhir]"),
    (re.compile(r"(?<![0-9A-Za-z-])[0-9][0-9ABab][0-9]{11,13}(?![0-9A-Za-z-])"), "[redacted:id]"),
    (
        re.compile(r"(?<![0-9])(?:18|19|20)[0-9]{2}-?(?:0[1-9]|1[0-2])-?(?:0[1-9]|[12][0-9]|3[01])(?![0-9])"),
        "[redacted:date]",
    ),
]


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[redacted:{len(value)} bytes]"
    if isinstance(value, dict):
        return {k: "[redacted]" if str(k).lower() in _SECRET_KEYS else _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_clean(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask identity and payload wherever it shows up."""
    for key in list(event_dict):
        if key in _SAFE_KEYS and key != "event":
            continue
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = _clean(event_dict[key])
    return event_dict


_QUOTED = re.compile(r'"[^"]*"')


def library_requests(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no raw request bytes from the HTTP library (aiohttp) in a log line.

    aiohttp puts the request line, a bad header or a bad URL into its exception texts ("Invalid header
    value char: b'X-Patient: NAME'") and its access log quotes the request line, the Referer and the
    User-Agent: a URL such as ``/fhir/Patient?family=NAME`` is as much health data as a payload. Its
    exceptions are cut to their type, its access lines keep no quoted part.
    """
    if not str(event_dict.get("logger", "")).startswith("aiohttp"):
        return event_dict
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        if isinstance(exc_info, BaseException):
            event_dict["error"] = type(exc_info).__name__
        elif isinstance(exc_info, tuple) and exc_info[0] is not None:
            event_dict["error"] = exc_info[0].__name__
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = _QUOTED.sub('"[redacted:request]"', event)
    return event_dict


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library to one redacted stream (stderr by default)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        library_requests,
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # signxml logs every canonicalised document at DEBUG: the VIHF names the patient's INS.
    logging.getLogger("signxml").setLevel(logging.WARNING)
