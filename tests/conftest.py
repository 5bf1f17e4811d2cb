"""Shared fixtures: stores (SQLite and PostgreSQL), sample messages, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hub.store import Store
from hub.store.postgres import PostgresStore
from hub.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

PG_DSN = os.environ.get("HUB_TEST_PG_DSN")
# In CI the PostgreSQL tests are mandatory: unreachable means failed, never skipped.
PG_REQUIRED = os.environ.get("HUB_REQUIRE_PG") == "1" or os.environ.get("CI") == "true"


def free_port() -> int:
    """A port to give a server that binds it later.

    Taken below the kernel's ephemeral range (``net.ipv4.ip_local_port_range``, 32768 and up by
    default): a port picked from that range can be handed to an outgoing connection of another
    test before our server binds it, which fails the bind now and then.
    """
    low, high = 20000, 32767
    with contextlib.suppress(OSError, ValueError):
        low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, low_ephemeral - 1)
    for _ in range(200):
        port = random.randint(low, high)
        if port in _HANDED_OUT:  # two servers of one test must never be given the same port
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port found")


_HANDED_OUT: set[int] = set()


def pg_dsn_or_skip() -> str:
    if not PG_DSN:
        if PG_REQUIRED:
            pytest.fail("HUB_TEST_PG_DSN is not set but PostgreSQL tests are required here")
        pytest.skip("PostgreSQL tests need HUB_TEST_PG_DSN (make test sets it)")
    return PG_DSN


async def new_pg_schema() -> tuple[str, str]:
    """A fresh schema for one test: (dsn, schema). Unreachable PostgreSQL fails the test when required."""
    dsn = pg_dsn_or_skip()
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if PG_REQUIRED:
            pytest.fail(f"PostgreSQL unreachable: {type(exc).__name__}")
        pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")
    await conn.close()
    return dsn, schema


async def drop_pg_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        # An extension this schema's migration created (pg_trgm) lives in it: moved out first, as dropping it
        # would drop every index using it in the other schemas of a shared database.
        for (name,) in await conn.fetch(
            "SELECT x.extname FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace WHERE n.nspname = $1",
            schema,
        ):
            await conn.execute(f'ALTER EXTENSION "{name}" SET SCHEMA public')
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "hub.db")
        await s.open()
        yield s
        await s.close()
        return
    dsn, schema = await new_pg_schema()
    s = PostgresStore(dsn, schema=schema, pool_size=4)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
        await drop_pg_schema(dsn, schema)


@pytest.fixture
def adt_a01() -> bytes:
    return (SAMPLES / "adt_a01.hl7").read_bytes()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Load every component once and move what exists now out of the collector's sight (`gc.freeze`).

    The per-test collection below then walks only what tests made: a few µs instead of 0.16 s with the whole
    of lxml, hl7apy and fhir.resources in the heap (measured on this 2-core machine; 809 tests: 0.26 s of
    collection in all, instead of 81 s without freezing).
    """
    from hub import registry

    registry.load_builtin()
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _no_leaked_resources() -> Iterator[None]:
    """Collect garbage after each test, so that a socket or transport it left open fails *that* test.

    An unclosed socket warns (ResourceWarning) only when it is collected; left to chance, the warning lands in
    whichever later test happens to run the collector, and fails it (pytest's unraisable-exception warning is
    an error here, `filterwarnings = error`).
    """
    yield
    gc.collect()
    # What outlived the test (modules and models it loaded, caches) is frozen too: the next collection walks
    # only what the next test makes. A leaked socket is unreachable by now, so it was collected (and warned) above.
    gc.freeze()


# -- a hung test fails, saying what it waited on -------------------------------------------------------------------
# pytest-timeout (pyproject: `timeout`, thread method) ends a test that outlives its timeout: it prints every thread's
# stack and stops the run, so that a hang fails CI instead of holding it. For an asyncio hang those stacks show only
# an idle event loop (select()); a little before, the hooks below print what each task of the running loop awaits
# (into the test's captured stderr, which pytest-timeout prints).
_TASK_DUMP = pytest.StashKey[threading.Timer]()


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    lead = min(10.0, settings.timeout / 10)
    timer = threading.Timer(settings.timeout - lead, _print_asyncio_tasks)
    timer.daemon = True
    timer.start()
    item.stash[_TASK_DUMP] = timer
    # None: pytest-timeout's own implementation (trylast) arms its timer as well


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    timer = item.stash.get(_TASK_DUMP, None)
    if timer is not None:
        timer.cancel()


def _print_asyncio_tasks() -> None:
    """Have every running event loop print its tasks (on its own thread: a loop blocked in a call prints nothing,
    and pytest-timeout's thread stacks show that call)."""
    for frame in sys._current_frames().values():
        f = frame
        while f is not None:
            loop = f.f_locals.get("self") if f.f_code.co_name == "run_forever" else None
            if isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running():
                loop.call_soon_threadsafe(_print_tasks, loop)
            f = f.f_back


def _print_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    print(f"==== about to time out: {len(tasks)} asyncio tasks, each with what it awaits ====", file=sys.stderr)
    for task in tasks:
        print(repr(task), file=sys.stderr)
        # The chain of awaits, outermost first (Task.print_stack shows only the outermost frame of a suspended task).
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                print(f"    awaits {awaited!r}", file=sys.stderr)
                break
            code = frame.f_code
            print(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}', file=sys.stderr)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    sys.stderr.flush()
