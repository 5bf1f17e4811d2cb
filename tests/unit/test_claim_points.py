"""Where a PostgreSQL claim starts (hub/store/claim_points.py): the rules, with a hand-driven clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.store.claim_points import BEGINNING, ClaimPoints

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Q = ("r", "dpi")


def at(secs: float, delivery_id: int) -> tuple[datetime, int]:
    return (T0 + timedelta(seconds=secs), delivery_id)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_claim_starts_where_the_last_one_stopped_and_from_the_beginning_once_per_period() -> None:
    clock = Clock()
    points = ClaimPoints(rescan_secs=1.0, clock=clock)
    start, token = points.start(Q)
    assert start == BEGINNING  # nothing claimed yet
    points.advance(Q, token, [at(1, 7), at(3, 9), at(2, 8)])
    clock.now += 0.5
    start, token = points.start(Q)
    assert start == at(3, 9)
    points.advance(Q, token, [])  # took nothing: stays
    assert points.start(Q)[0] == at(3, 9)
    clock.now += 0.6  # a second since the last claim from the beginning
    assert points.start(Q)[0] == BEGINNING
    assert points.start(("r", "other"))[0] == BEGINNING  # queues are apart


def test_what_is_put_back_moves_the_point_back_even_during_a_claim() -> None:
    points = ClaimPoints(rescan_secs=60.0, clock=Clock())
    _, token = points.start(Q)
    points.advance(Q, token, [at(5, 20)])
    _, token = points.start(Q)
    points.lower(Q, at(2, 11))  # committed while that claim ran
    points.advance(Q, token, [at(6, 21)])  # so the claim does not move the point past it
    assert points.start(Q)[0] == at(2, 11)
    points.lower(Q, at(9, 30))  # after the point: nothing to do
    assert points.start(Q)[0] == at(2, 11)
    _, token = points.start(Q)
    points.forget()
    points.advance(Q, token, [at(7, 25)])
    assert points.start(Q)[0] == BEGINNING
