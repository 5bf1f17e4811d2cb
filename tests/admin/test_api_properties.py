"""Property-based run of the admin API's own OpenAPI document with schemathesis: no request answers 500.

The hub runs as its own process (`hub serve`), with a message stored so that the message, payload and replay
operations have something to find. Each operation gets a bounded number of generated requests, valid and
invalid (schemathesis' positive and negative modes), sent with an admin token; a 5xx fails the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode

from hub.admin.auth import hash_token
from tests.conftest import free_port
from tests.hubkit import HUB_BIN, adt, write_config

ADMIN_TOKEN = "admin-" + "p" * 40
EXAMPLES = int(os.environ.get("HUB_API_EXAMPLES", "15"))


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hub exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a port another process opens: no event to await across processes
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("api")
    http_port, mllp_port = free_port(), free_port()
    admin = {"tokens": [{"name": "ada", "role": "admin", "token_hash": hash_token(ADMIN_TOKEN)}]}
    config = write_config(
        folder, peer_port=1, admin=admin, http={"listen": f"127.0.0.1:{http_port}"},
        listener={"listen": f"127.0.0.1:{mllp_port}"},
    )  # fmt: skip
    proc = subprocess.Popen(
        [str(HUB_BIN), "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "HUB_EVENT_LOOP": "asyncio"},
    )  # fmt: skip
    try:
        _wait_port(http_port, proc)
        _wait_port(mllp_port, proc)
        with socket.create_connection(("127.0.0.1", mllp_port)) as s:
            s.sendall(b"\x0b" + adt("PROP1") + b"\x1c\r")
            assert b"MSA|AA|PROP1" in s.recv(4096)
        yield f"http://127.0.0.1:{http_port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _operations(base: str) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_operation_answers_500(served: str, mode: GenerationMode) -> None:
    operations = _operations(served)
    assert len(operations) >= 20  # the whole document, not an empty run
    failures: list[tuple[str, str, int, str]] = []
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate],
        )  # fmt: skip
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=served, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=20)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:200]))

        run()
    assert failures == []


def test_the_run_is_bounded() -> None:
    assert 1 <= EXAMPLES <= 200  # CI must finish in minutes: raise HUB_API_EXAMPLES locally for a longer run
    assert Path(HUB_BIN).exists()
