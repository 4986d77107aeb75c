"""Maintenance windows as Systems Manager defines them, on the real cluster.

A policy's window uses the SSM options a platform team already writes
(https://docs.aws.amazon.com/systems-manager/latest/userguide/maintenance-windows-schedule-options.html):
a 7-field ``cron(Seconds Minutes Hours Day Month ? Year)``, a ``scheduleOffset``
in days, and an ``endDate``. To stay quick, the cron date is *yesterday* a few
seconds from now, so with ``scheduleOffset: 1`` the window opens in a few
seconds, as SSM would open it ("the number of days to wait after the date and
time specified by a cron expression"), and the ``endDate`` follows shortly.

What a user sees: the ImagePatch waits in ``AwaitingWindow`` with
``nextWindowStart`` at the offset date (never at the cron date), the workload is
patched once the window opens, and a patch that comes after the end date
stalls with ``NoMaintenanceWindow`` and leaves its workload alone.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from tests.support.scenario import Scenario, fake_digest, unique
from tests.support.wait import wait_for

pytestmark = pytest.mark.kwok

APP = "registry.local/payments/app"
OLD = f"{APP}:1.4"
FAST_GATE = {"progressDeadlineSeconds": 90, "healthyFor": "3s", "maxRestarts": 0}


@pytest.fixture
def given(kube, operator) -> Iterator[Scenario]:
    scenario = Scenario(kube)
    yield scenario
    scenario.cleanup()


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def test_an_offset_window_opens_then_its_end_date_stops_it(given: Scenario) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    opens = now + dt.timedelta(seconds=30)
    ends = opens + dt.timedelta(seconds=15)  # only starting is limited
    cron_date = opens - dt.timedelta(days=1)  # the offset of one day lands on `opens`
    schedule = (f"cron({cron_date.second} {cron_date.minute} {cron_date.hour} {cron_date.day} "
                f"{cron_date.month} ? {cron_date.year})")
    policy = unique("pol")
    given.policy(policy, rollout=FAST_GATE, maintenanceWindow={
        "schedule": schedule, "scheduleOffset": 1, "duration": "10m", "endDate": rfc3339(ends)})
    ns = given.namespace()
    given.deployment(ns, "early", image=OLD, policy=policy, replicas=1)
    given.deployment(ns, "late", image=OLD, policy=policy, replicas=1)

    # Before the offset date: waiting, and the next window is the offset date.
    early, early_digest = unique("early"), fake_digest("early")
    given.imagepatch(early, image=APP, policy=policy, target_digest=early_digest,
                     targets=[{"kind": "Deployment", "namespace": ns, "name": "early",
                               "container": "app"}])
    waiting = given.wait_phase(early, "AwaitingWindow", "Succeeded", timeout=30)
    print(f"schedule {schedule}, offset 1 day: opens {rfc3339(opens)}, ends {rfc3339(ends)}")
    assert waiting["status"]["phase"] == "AwaitingWindow", waiting["status"]
    assert waiting["status"]["nextWindowStart"] == rfc3339(opens)
    assert given.image_of(ns, "early") == OLD

    # The window opens: the patch rolls out.
    done = given.wait_phase(early, "Succeeded", "RolledBack", "Failed", timeout=150)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert given.image_of(ns, "early") == f"{APP}:1.4@{early_digest}"
    print(f"first patch done at {rfc3339(dt.datetime.now(dt.UTC))}")

    # After the end date no window is left: a new patch stalls, its workload untouched.
    time.sleep(max(0.0, (ends - dt.datetime.now(dt.UTC)).total_seconds() + 1))
    late, late_digest = unique("late"), fake_digest("late")
    given.imagepatch(late, image=APP, policy=policy, target_digest=late_digest,
                     targets=[{"kind": "Deployment", "namespace": ns, "name": "late",
                               "container": "app"}])

    def stalled():
        status = given.get("imagepatch", late).get("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        return status if conditions.get("Stalled", {}).get("reason") == "NoMaintenanceWindow" else None

    status = wait_for(stalled, timeout=60, interval=0.5, what=f"{late} stalled: no window left")
    assert status["phase"] == "AwaitingWindow"
    assert not status.get("nextWindowStart")
    assert given.image_of(ns, "late") == OLD
