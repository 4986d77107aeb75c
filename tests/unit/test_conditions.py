"""kstatus conditions keep their transition time while their status holds."""

from __future__ import annotations

import datetime as dt

from imagepatch.core.conditions import Condition, format_time, merge

T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)


def ready(status: str, reason: str, generation: int = 1) -> Condition:
    return Condition(type="Ready", status=status, reason=reason, message=reason,
                     observed_generation=generation)


def test_new_condition_gets_now_as_transition_time() -> None:
    [cond] = merge(None, [ready("True", "Reconciled")], now=T0)
    assert cond["lastTransitionTime"] == "2026-11-01T08:00:00Z"
    assert cond["observedGeneration"] == 1


def test_same_status_keeps_transition_time_but_updates_reason_and_generation() -> None:
    first = merge(None, [ready("True", "Reconciled")], now=T0)
    [cond] = merge(first, [ready("True", "Suspended", generation=2)], now=T1)
    assert cond["lastTransitionTime"] == format_time(T0)
    assert (cond["reason"], cond["observedGeneration"]) == ("Suspended", 2)


def test_status_change_moves_transition_time() -> None:
    first = merge(None, [ready("True", "Reconciled")], now=T0)
    [cond] = merge(first, [ready("False", "InvalidSpec")], now=T1)
    assert cond["lastTransitionTime"] == format_time(T1)


def test_dropped_types_disappear_and_others_are_kept() -> None:
    stalled = Condition(type="Stalled", status="True", reason="InvalidSpec", message="x",
                        observed_generation=1)
    other = {"type": "Custom", "status": "True", "reason": "X", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
    first = merge([other], [ready("False", "InvalidSpec"), stalled], now=T0)
    second = merge(first, [ready("True", "Reconciled")], now=T1, drop=["Stalled"])
    assert sorted(c["type"] for c in second) == ["Custom", "Ready"]
