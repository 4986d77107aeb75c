"""reconcile/exporters.py: every destination gets each export; one failing stops none."""

from __future__ import annotations

import asyncio
import datetime as dt

from imagepatch.adapters.errors import TransientError
from imagepatch.reconcile.exporters import FanOut

NOW = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[dict, object]] = []

    async def export(self, results_by_policy, *, now, opted_out=()) -> object:
        self.calls.append(({p: list(r) for p, r in results_by_policy.items()}, opted_out))
        if self.fail:
            raise TransientError("down", reason="AwsUnavailable")
        return None


def test_each_destination_gets_the_results_even_after_another_fails(caplog) -> None:
    broken, fine = Recorder(fail=True), Recorder()
    fan = FanOut({"Security Hub": broken, "AWS Config": fine})
    # A generator is read once by FanOut, so both see every result.
    asyncio.run(fan.export({"p": (r for r in ["a", "b"])}, now=NOW, opted_out={("k", "n", "w")}))
    assert broken.calls == fine.calls == [({"p": ["a", "b"]}, {("k", "n", "w")})]
    assert "Security Hub export of p failed: AwsUnavailable" in caplog.text
