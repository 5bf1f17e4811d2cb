"""SQLite on a full disk: AE (never a crash, never a spin), and recovery on its own when space returns.

The store lives on a small tmpfs the test mounts (root only; skipped with the reason elsewhere,
never in CI where the tests run as root). Messages carry a padding segment so the disk fills fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubkit import MllpClient, ack_fields, adt, running_hub, running_peer, wait_until, write_config


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the full-disk test needs root to mount a small tmpfs")
        pytest.skip("mounting a small tmpfs needs root")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {exc}")
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _padded(control_id: str, patient: str) -> bytes:
    return adt(control_id, patient=patient) + b"ZPD|" + b"X" * 20_000 + b"\r"


async def test_full_disk_answers_ae_without_spinning_and_recovers_when_space_returns(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "3M") as disk:
        async with running_peer() as peer:
            config = write_config(tmp_path, peer_port=peer.port, store={"kind": "sqlite", "path": str(disk / "hub.db")})
            async with running_hub(config) as hub:
                client = await MllpClient.connect(int(hub.listeners["mllp_in"].port))
                acked: list[str] = []
                code = "AA"
                n = 0
                while code == "AA":
                    assert n < 2000, "the disk never filled"
                    control = f"F{n:05d}"
                    code = ack_fields(await client.send(_padded(control, f"P{n % 3}")))["MSA"][1]
                    if code == "AA":
                        acked.append(control)
                    n += 1
                assert code == "AE"

                # While full: the workers back off instead of spinning on failed claims.
                errors = hub.metrics.store_errors
                before = sum(errors.values())
                for _ in range(3):  # three more refused messages, about two seconds apart in store time
                    assert ack_fields(await client.send(_padded(f"G{n}", "P0")))["MSA"][1] == "AE"
                    n += 1
                with contextlib.suppress(TimeoutError):
                    await wait_until(lambda: sum(errors.values()) - before > 60, timeout=2.0)
                assert sum(errors.values()) - before <= 60

                # Space returns: AA again within 30 s, with no restart, and nothing acknowledged is lost.
                await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,size=64M", str(disk)], check=True)

                async def accepted() -> bool:
                    nonlocal n
                    n += 1
                    reply = ack_fields(await client.send(_padded(f"H{n:05d}", "P1")))["MSA"][1]
                    if reply == "AA":
                        acked.append(f"H{n:05d}")
                    return reply == "AA"

                await wait_until(accepted, timeout=30, interval=0.2)
                received = lambda: {b.split(b"|")[9].decode() for b in peer.bodies}  # noqa: E731
                await wait_until(lambda: set(acked) <= received(), timeout=60)
                await client.close()
