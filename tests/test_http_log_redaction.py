"""No patient name from a malformed HTTP request (header, URL, request line) in any log line.

Each request is written as raw bytes on a real socket, the way a broken or hostile client sends it; the hub
logs at debug level into a buffer that is then scanned.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

from hub.logs import configure
from tests.adapters.test_fhir import intake_config
from tests.hubkit import running_hub

NAME, GIVEN = "DUPONTEL", "JOSEPHINE"
REQUESTS = [
    # a header value with a control character: the parser refuses the whole request
    f"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nX-Patient: {NAME} {GIVEN}\x01\r\nContent-Length: 2\r\n\r\n{{}}",
    # a header name that is not a token
    f"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n{NAME} {GIVEN}: x\r\n\r\n",
    # a URL with a control character and one with a bad escape
    f"GET /fhir/Patient?family={NAME}\x7f{GIVEN} HTTP/1.1\r\nHost: x\r\n\r\n",
    f"GET /fhir/Patient?family={NAME}%zz{GIVEN} HTTP/1.1\r\nHost: x\r\n\r\n",
    # a request line that is not HTTP at all, and a URL far too long
    f"{NAME} {GIVEN} HTTP/9.9\r\n\r\n",
    f"GET /fhir/{NAME}{GIVEN}{'A' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n",
    # an unknown FHIR URL and an unknown route naming the patient
    f"GET /fhir/Patient/{NAME}-{GIVEN} HTTP/1.1\r\nHost: x\r\n\r\n",
    f"GET /api/messages/{NAME}-{GIVEN} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {NAME}\r\n\r\n",
    f"GET /{NAME}/{GIVEN} HTTP/1.1\r\nHost: x\r\n\r\n",
]


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(65536)
    finally:
        writer.close()


async def test_malformed_requests_leave_no_name_in_the_logs(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure("debug", "json", stream=stream)
    try:
        async with running_hub(intake_config(tmp_path, "http://127.0.0.1:1")) as hub:
            assert hub.http_port is not None
            logging.getLogger("aiohttp.access").setLevel(logging.DEBUG)  # as an operator debugging would
            for request in REQUESTS:
                answer = await exchange(hub.http_port, request.encode("latin-1"))
                assert answer[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 ") and answer[9:10] == b"4", answer[:60]
    finally:
        logging.getLogger().handlers.clear()
    logs = stream.getvalue()
    assert logs.count("\n") > 5  # the run did log
    for needle in (NAME, GIVEN):
        assert needle not in logs, [line for line in logs.splitlines() if needle in line][:3]

