"""The circuit breaker per registry host (core/breaker.py), with the clock passed in."""

from __future__ import annotations

import pytest

from imagepatch.core.breaker import Breaker, BreakerBoard, BreakerSettings, BreakerState

SETTINGS = BreakerSettings(failures=3, cooldown=30.0, idle=600.0)


def opened(at: float = 100.0) -> Breaker:
    breaker = Breaker(SETTINGS)
    for _ in range(3):
        assert breaker.admit(at).allowed
        breaker.failed(at, "RegistryTimeout")
    return breaker


def test_a_closed_breaker_lets_every_call_through() -> None:
    breaker = Breaker(SETTINGS)
    admission = breaker.admit(0.0)
    assert admission.allowed and not admission.probe
    assert breaker.would_refuse(0.0) is None


def test_failures_below_the_threshold_keep_it_closed_and_a_success_resets_the_count() -> None:
    breaker = Breaker(SETTINGS)
    breaker.failed(1.0)
    breaker.failed(2.0)
    breaker.succeeded(3.0)
    breaker.failed(4.0)
    breaker.failed(5.0)
    assert breaker.state == BreakerState.CLOSED
    assert breaker.consecutive == 2


def test_n_consecutive_failures_open_it_and_calls_are_refused_until_the_cooldown_ends() -> None:
    breaker = opened(at=100.0)
    assert breaker.state == BreakerState.OPEN
    assert breaker.last_error == "RegistryTimeout"
    refused = breaker.admit(110.0)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(20.0)
    assert breaker.would_refuse(129.9) is not None


def test_after_the_cooldown_one_probe_goes_and_the_others_are_refused() -> None:
    breaker = opened(at=100.0)
    assert breaker.would_refuse(130.0) is None
    probe = breaker.admit(130.0)
    assert probe.allowed and probe.probe
    assert breaker.state == BreakerState.HALF_OPEN
    other = breaker.admit(130.5)
    assert not other.allowed
    assert other.retry_after > 0


def test_a_successful_probe_closes_it() -> None:
    breaker = opened(at=100.0)
    breaker.admit(130.0)
    breaker.succeeded(131.0)
    assert breaker.state == BreakerState.CLOSED
    assert breaker.consecutive == 0
    assert breaker.admit(131.0).allowed


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    breaker = opened(at=100.0)
    breaker.admit(130.0)
    breaker.failed(132.0, "RegistryUnavailable")
    assert breaker.state == BreakerState.OPEN
    assert breaker.last_error == "RegistryUnavailable"
    assert not breaker.admit(161.0).allowed
    assert breaker.admit(162.0).probe


def test_an_abandoned_probe_frees_the_slot_for_the_next_call() -> None:
    breaker = opened(at=100.0)
    breaker.admit(130.0)
    breaker.abandoned(130.5, probe=True)
    assert breaker.state == BreakerState.HALF_OPEN
    assert breaker.admit(131.0).probe


def test_an_abandoned_call_changes_no_count() -> None:
    breaker = Breaker(SETTINGS)
    breaker.failed(1.0)
    breaker.abandoned(2.0, probe=False)
    assert breaker.consecutive == 1
    assert breaker.state == BreakerState.CLOSED


def test_a_late_failure_while_open_does_not_extend_the_cooldown() -> None:
    breaker = opened(at=100.0)
    breaker.failed(120.0)
    assert breaker.opened_at == 100.0


def test_the_board_keeps_one_breaker_per_host_and_forgets_idle_ones() -> None:
    board = BreakerBoard(BreakerSettings(failures=1, cooldown=5.0, idle=60.0))
    board.get("slow.example").admit(0.0)
    board.get("slow.example").failed(0.0)
    board.get("busy.example").admit(0.0)
    board.get("fresh.example").admit(50.0)
    assert board.states() == {"slow.example": BreakerState.OPEN,
                              "busy.example": BreakerState.CLOSED,
                              "fresh.example": BreakerState.CLOSED}
    assert board.get("slow.example") is board.get("slow.example")
    gone = board.prune(60.0, busy=frozenset({"busy.example"}))
    assert gone == ["slow.example"]
    assert set(board.states()) == {"busy.example", "fresh.example"}


@pytest.mark.parametrize("settings", [
    dict(failures=0), dict(cooldown=-1.0), dict(idle=0.0),
])
def test_settings_out_of_range_are_refused(settings: dict) -> None:
    with pytest.raises(ValueError):
        BreakerSettings(**settings)
