"""Where a route's steps run: on the event loop once the chain is known to be short, else in the worker thread."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hub.content_types import ContentType
from hub.documents import INLINE_MAX_BYTES, INLINE_MAX_CPU_SECS, apply_steps, runs_inline
from hub.message import Message
from hub.pipeline import Pipeline, StepContext

ORU = (
    "MSH|^~\\&|SIL|LABO|DPI|CHU|20250301101500||ORU^R01^ORU_R01|C1|P|2.5|||||FRA|UNICODE UTF-8\r"
    "PID|1||000003^^^CHU&1.2.3&ISO^PI||NOM^PRENOM^^^^^L||19790328|F\r"
)
MODULE = """
import threading

from hub.message import Message

THREADS: list[str] = []


def note_thread(message: Message) -> Message:
    THREADS.append(threading.current_thread().name)
    return message
"""


def message(body: bytes = ORU.encode()) -> Message:
    return Message.new(body, content_type=ContentType.HL7V2, metadata={"receiving_app": "DPI"})


def built_in() -> Pipeline:
    return Pipeline([("hl7v2_map", {"rules": [{"set": "MSH-5", "value": "PACS"}]})], route="r")


async def test_the_first_run_is_in_the_worker_thread_then_a_short_chain_runs_inline() -> None:
    pipeline = built_in()
    assert pipeline.cpu_secs is None and not runs_inline(pipeline, message())
    with ThreadPoolExecutor(1, thread_name_prefix="steps") as pool:
        out = await apply_steps(pipeline, message(), StepContext(), store=None, executor=pool)  # type: ignore[arg-type]
        assert out.metadata["receiving_app"] == "PACS"
        assert pipeline.cpu_secs is not None and pipeline.cpu_secs < INLINE_MAX_CPU_SECS
        assert runs_inline(pipeline, message())
        out = await apply_steps(pipeline, message(), StepContext(), store=None, executor=pool)  # type: ignore[arg-type]
        assert out.metadata["receiving_app"] == "PACS"


def test_a_slow_chain_or_a_large_message_goes_to_the_worker_thread() -> None:
    pipeline = built_in()
    pipeline.cpu_secs = INLINE_MAX_CPU_SECS  # a recent run as slow as the bound
    assert not runs_inline(pipeline, message())
    pipeline.cpu_secs = INLINE_MAX_CPU_SECS / 10
    assert runs_inline(pipeline, message())
    large = message(ORU.encode() + b"NTE|1||" + b"x" * INLINE_MAX_BYTES + b"\r")
    assert not runs_inline(pipeline, large)


async def test_a_route_with_a_user_step_always_runs_in_the_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "steps" / "inline_probe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "steps"))
    for name in ("inline_probe", "inline_probe.probe"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # imported here, forgotten after the test
    pipeline = Pipeline([("python", "inline_probe.probe:note_thread")], route="r")
    with ThreadPoolExecutor(1, thread_name_prefix="steps") as pool:
        for _ in range(3):
            await apply_steps(pipeline, message(), StepContext(), store=None, executor=pool)  # type: ignore[arg-type]
    threads = sys.modules["inline_probe.probe"].THREADS

    assert pipeline.cpu_secs is not None and not runs_inline(pipeline, message())
    assert len(threads) == 3 and all(name.startswith("steps") for name in threads)
    assert threading.current_thread().name not in threads


@pytest.mark.parametrize("slow", [0.5, 2.0])
def test_a_slow_run_counts_whole_at_once_and_decays_slowly(slow: float) -> None:
    from hub.documents import _timed

    pipeline = built_in()
    pipeline.cpu_secs = slow  # as if the last run had taken that long
    _timed(pipeline, message(), StepContext())
    assert INLINE_MAX_CPU_SECS < pipeline.cpu_secs < slow  # one fast run lowers it a tenth of the way, no more
