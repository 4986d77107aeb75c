"""A workload owner's hold (issue 22 item 5): ``imagepatch.dev/hold`` read as a request.

A hold can only make imagepatch do less: while it is active detection proposes
no patch for the workload (reported ``Held``) and a rollout does not start on
it; it never stops a target already being patched; it ends by itself at
``until`` (at most 30 days after it was set); an unreadable hold is ignored,
saying why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest

from imagepatch.core import hold, reasons
from imagepatch.core.detection import assess, plan
from imagepatch.core.hold import HoldError, Standing
from imagepatch.core.report import STATES
from imagepatch.model.names import HOLD_ANNOTATION
from imagepatch.reconcile.detection import Detector
from tests.unit.test_detection_core import OUTDATED_FACTS, SPEC, body
from tests.unit.test_gitops import targets
from tests.unit.test_tenancy_identity import KindKube, outdated_registry, workload

NOW = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)


def value(**doc: Any) -> str:
    return json.dumps(doc)


def held(until: str = "2026-12-06T12:00:00Z", **more: Any) -> dict[str, str]:
    return {HOLD_ANNOTATION: value(until=until, **more)}


# --- core: reading the annotation ---------------------------------------------------------

def test_a_hold_written_by_the_plugin_reads_back_as_written():
    raw = hold.annotation(until=NOW + dt.timedelta(days=3), now=NOW, reason="release freeze",
                          by="alice@example.com")
    assert json.loads(raw) == {"at": "2026-12-05T12:00:00Z", "until": "2026-12-08T12:00:00Z",
                               "reason": "release freeze", "by": "alice@example.com"}
    current = hold.status({HOLD_ANNOTATION: raw}, NOW)
    assert current.standing is Standing.ACTIVE
    assert current.hold == hold.Hold(until=NOW + dt.timedelta(days=3), at=NOW,
                                     reason="release freeze", by="alice@example.com")
    assert current.describe() == (
        "Held until 2026-12-08T12:00:00Z by alice@example.com: release freeze: no patch is "
        "proposed or rolled out for it until then.")
    assert json.loads(hold.annotation(until=NOW + dt.timedelta(hours=1), now=NOW)) == {
        "at": "2026-12-05T12:00:00Z", "until": "2026-12-05T13:00:00Z"}


@pytest.mark.parametrize(("raw", "problem"), [
    (7, "not text"),
    ("x" * 1025, "longer than 1024 characters"),
    ("until tomorrow", "not JSON"),
    ('["2026-12-06T00:00:00Z"]', "not a JSON object"),
    (value(reason="freeze"), "until: want an RFC 3339 time"),
    (value(until="2026-12-06T00:00:00"), "until: want an RFC 3339 time"),  # no offset
    (value(until="tomorrow Z"), "until: want an RFC 3339 time"),
    (value(until=20261206), "until: want an RFC 3339 time"),
    (value(until="2026-12-06T00:00:00Z", at="now"), "at: want an RFC 3339 time"),
    (value(until="2026-12-06T00:00:00Z", reason=["a"]), "reason: want a string"),
    (value(until="2026-12-06T00:00:00Z", by={"user": "x"}), "by: want a string"),
    # Tenants' clocks may be off by a little, not by a day.
    (value(until="2026-12-07T00:00:00Z", at="2026-12-06T00:00:00Z"), "is in the future"),
    # Written by hand without `at`: counts only while until is within 30 days.
    (value(until="2027-02-01T00:00:00Z"), "more than 30 days away"),
])
def test_an_unreadable_hold_is_ignored_saying_why(raw, problem):
    current = hold.status({HOLD_ANNOTATION: raw}, NOW)
    assert current.standing is Standing.IGNORED
    assert problem in current.problem
    assert current.describe().startswith(f"Hold ignored ({HOLD_ANNOTATION}): ")
    assert current.describe().endswith("imagepatch patches this workload as usual.")
    assert hold.blocked({"metadata": {"annotations": {HOLD_ANNOTATION: raw}}}, NOW) is None


def test_no_annotation_is_no_hold():
    for given in (None, {}, {"other": "x"}):
        current = hold.status(given, NOW)
        assert current.standing is Standing.NONE and current.describe() == ""
    for workload_body in ({}, {"metadata": None}, {"metadata": {"annotations": None}},
                          {"metadata": {"annotations": ["a"]}}):
        assert hold.blocked(workload_body, NOW) is None


def test_a_hold_ends_by_itself_at_until():
    annotations = held("2026-12-05T12:00:00Z", by="bob")
    current = hold.status(annotations, NOW)
    assert current.standing is Standing.EXPIRED
    assert current.describe() == "Hold expired at 2026-12-05T12:00:00Z by bob."
    assert hold.blocked({"metadata": {"annotations": annotations}}, NOW) is None
    assert hold.status(annotations, NOW - dt.timedelta(seconds=1)).standing is Standing.ACTIVE


def test_a_hold_lasts_at_most_30_days_from_when_it_was_set():
    annotations = held("2027-06-01T00:00:00Z", at="2026-12-01T00:00:00Z")
    current = hold.status(annotations, NOW)
    assert current.standing is Standing.ACTIVE and current.hold is not None
    assert current.hold.until == dt.datetime(2026, 12, 31, tzinfo=dt.UTC)
    assert current.hold.capped
    assert "(cut to 30 days from when it was set)" in current.describe()
    assert hold.status(annotations, dt.datetime(2026, 12, 31, tzinfo=dt.UTC)).standing \
        is Standing.EXPIRED
    # A clock a little ahead is tolerated; an offset other than Z is read as written.
    assert hold.status(held("2026-12-06T12:00:00+01:00", at="2026-12-05T12:04:00Z"), NOW) \
        .standing is Standing.ACTIVE


def test_reason_and_by_are_bounded_single_line_text():
    current = hold.status(held(reason="a\nb\x1b[31m" + "x" * 300, by=" carol\t"), NOW)
    assert current.hold is not None
    assert current.hold.by == "carol"
    assert current.hold.reason.startswith("a b [31m") and len(current.hold.reason) == 200
    assert current.hold.reason.endswith("...")


def test_an_unreadable_hold_is_reported_saying_what_is_wrong_and_how_to_fix_it():
    raw = "freeze\nplease " + "x" * 300
    found = hold.ignored({"metadata": {"annotations": {HOLD_ANNOTATION: raw}}}, NOW)
    assert found is not None
    reason, message, fingerprint = found
    assert reason == reasons.HOLD_IGNORED == "HoldIgnored"
    # The tenant's value is echoed, single-line and cut short; the problem and the fix follow.
    assert message.startswith(f"{HOLD_ANNOTATION} 'freeze please xxx")
    assert f"{'x' * 60}...' is ignored: not JSON" in message
    assert "x" * 80 not in message and "\n" not in message
    assert "imagepatch patches this workload as usual" in message
    assert "`kubectl imagepatch hold KIND/NAME --until 3d" in message
    assert "`kubectl imagepatch release KIND/NAME`" in message
    assert len(message) < 512
    assert fingerprint == hold.fingerprint(raw) != hold.fingerprint(raw + "y")
    assert len(fingerprint) == 16
    # A value that is not text (a body decoded by hand) is named, never trusted.
    found = hold.ignored({"metadata": {"annotations": {HOLD_ANNOTATION: 7}}}, NOW)
    assert found is not None and "'7' is ignored: not text" in found[1]
    # Too long ago or too far: ignored too; an active, expired or absent hold is no warning.
    too_far = hold.ignored({"metadata": {"annotations": held("2027-02-01T00:00:00Z")}}, NOW)
    assert too_far is not None and "more than 30 days away" in too_far[1]
    for given in (held(), held("2026-12-05T11:00:00Z"), {}):
        assert hold.ignored({"metadata": {"annotations": given}}, NOW) is None


def test_blocked_names_the_hold_and_how_to_end_it():
    reason, message = hold.blocked({"metadata": {"annotations": held(reason="freeze",
                                                                      by="dana")}}, NOW) or ("", "")
    assert reason == reasons.HELD == "Held" and reasons.HELD in STATES
    assert message == ("held until 2026-12-06T12:00:00Z by dana: freeze (imagepatch.dev/hold); "
                       "`kubectl imagepatch release` ends it sooner")
    why = hold.skip({"metadata": {"annotations": held()}}, NOW)
    assert why is not None and why.reason == "Held" and why.message.startswith("held until")
    assert hold.skip({}, NOW) is None


# --- core: --until -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "until"), [
    (None, NOW + dt.timedelta(hours=24)),
    ("", NOW + dt.timedelta(hours=24)),
    ("90m", NOW + dt.timedelta(minutes=90)),
    ("12h", NOW + dt.timedelta(hours=12)),
    (" 1d12h ", NOW + dt.timedelta(hours=36)),
    ("1w", NOW + dt.timedelta(days=7)),
    ("30d", NOW + dt.timedelta(days=30)),
    ("2026-12-24", dt.datetime(2026, 12, 24, tzinfo=dt.UTC)),
    ("2026-12-24T08:00:00Z", dt.datetime(2026, 12, 24, 8, tzinfo=dt.UTC)),
    ("2026-12-24T08:00:00+02:00", dt.datetime(2026, 12, 24, 6, tzinfo=dt.UTC)),
])
def test_until_is_a_duration_a_date_or_a_time(text, until):
    assert hold.parse_until(text, NOW) == until


@pytest.mark.parametrize(("text", "problem"), [
    ("soon", "want a duration"),
    ("3 days", "want a duration"),
    ("2026-12-24T08:00:00", "want a duration"),  # no offset
    ("2026-13-45", "want a duration"),
    ("0s", "is not in the future"),
    ("2026-12-01", "is not in the future"),
    ("31d", "a hold lasts at most 30 days (until 2027-01-04T12:00:00Z)"),
])
def test_an_until_the_plugin_refuses_says_what_to_write(text, problem):
    with pytest.raises(HoldError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        hold.parse_until(text, NOW)


def test_durations():
    assert hold.parse_duration("2h30m") == dt.timedelta(hours=2, minutes=30)
    assert hold.parse_duration("45s") == dt.timedelta(seconds=45)
    for text in ("", "h", "2", "2x", "-1h", "1.5h"):
        assert hold.parse_duration(text) is None


# --- detection: a held workload gets no patch ---------------------------------------------

def test_the_plan_proposes_no_patch_for_a_held_workload():
    free = assess.assess_workload(body("web"), (OUTDATED_FACTS,), SPEC, namespace_labels={},
                                  memory=None)
    frozen = assess.assess_workload(body("api", **held(reason="freeze")), (OUTDATED_FACTS,),
                                    SPEC, namespace_labels={}, memory=None)
    planned = plan.plan_pass([free, frozen], SPEC, [], targeted=False, now=NOW)
    [intent] = planned.patches.create
    assert [t.name for t in intent.targets] == ["web"]
    assert planned.skipped["uid-api"].reason == "Held"
    # Once it has ended, the hold asks for nothing.
    later = plan.plan_pass([free, frozen], SPEC, [], targeted=False,
                           now=NOW + dt.timedelta(days=2))
    assert sorted(t.name for t in later.patches.create[0].targets) == ["api", "web"]
    assert later.skipped == {}


def detect(*workloads: dict, rollout: dict | None = None) -> KindKube:
    spec: dict[str, Any] = {"namespaceSelector": {}, **({"rollout": rollout} if rollout else {})}
    kube = KindKube([{"metadata": {"name": "a", "generation": 1, "annotations": {}},
                      "spec": spec}])
    detector = Detector(kube=kube, registry=outdated_registry(), clock=lambda: NOW)
    for one in workloads:
        detector.observe("ADDED", one, kind=one["kind"])
    asyncio.run(detector.evaluate_all())
    return kube


def test_a_held_workload_reads_held_while_another_of_its_policy_is_patched():
    kube = detect(workload("Deployment", "web", **held(reason="release freeze", by="alice")),
                  workload("Deployment", "api"))
    assert targets(kube) == ["api"]
    state = kube.state_of("Deployment", "web")
    assert state["state"] == "Held"
    assert state["message"] == (
        "BaseImageOutdated, but not patched: held until 2026-12-06T12:00:00Z by alice: release "
        "freeze (imagepatch.dev/hold); `kubectl imagepatch release` ends it sooner")


@pytest.mark.parametrize("annotations", [
    held("2026-12-05T11:00:00Z"),  # ended
    {HOLD_ANNOTATION: "freeze please"},  # unreadable: ignored
])
def test_an_ended_or_unreadable_hold_does_not_stop_the_patch(annotations):
    kube = detect(workload("Deployment", "web", **annotations))
    assert targets(kube) == ["web"]
    assert kube.state_of("Deployment", "web")["state"] != "Held"


class ClosingKube(KindKube):
    """KindKube, plus the close request a pass makes when a hold starts to count."""

    async def annotate_imagepatch(self, name: str, annotations: Any) -> None:
        meta = self.patches[name]["metadata"]
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}


def test_an_unreadable_hold_gets_one_warning_event_per_distinct_value():
    from imagepatch.model.names import REQUESTED_AT_ANNOTATION

    kube = ClosingKube([{"metadata": {"name": "a", "generation": 1, "annotations": {}},
                      "spec": {"namespaceSelector": {}}}])
    detector = Detector(kube=kube, registry=outdated_registry(), clock=lambda: NOW)
    passes = 0

    def run(web: dict) -> list[str]:
        nonlocal passes
        passes += 1  # a human's "check now": every pass evaluates web again
        kube.policies[0]["metadata"]["annotations"][REQUESTED_AT_ANNOTATION] = str(passes)
        detector.observe("MODIFIED", web, kind="Deployment")
        asyncio.run(detector.evaluate_all())
        return [e["message"] for e in kube.events if e["reason"] == reasons.HOLD_IGNORED]

    # A malformed hold: one Warning Event, and the workload is patched as usual
    warned = run(workload("Deployment", "web", **{HOLD_ANNOTATION: "freeze please"}))
    assert len(warned) == 1 and "'freeze please' is ignored: not JSON" in warned[0]
    assert [e["type"] for e in kube.events if e["reason"] == reasons.HOLD_IGNORED] == ["Warning"]
    assert targets(kube) == ["web"]
    # The same value again, in later passes: nothing more
    assert len(run(workload("Deployment", "web", **{HOLD_ANNOTATION: "freeze please"}))) == 1
    remembered = detector.memory.get("Deployment", "ns", "web", "uid-Deployment-web")
    assert remembered.hold_warned == hold.fingerprint("freeze please")
    # Another bad value: one more
    warned = run(workload("Deployment", "web", **held("2027-03-01T00:00:00Z")))
    assert len(warned) == 2 and "more than 30 days away" in warned[1]
    # Fixed, then the first bad value written again: reported again
    assert len(run(workload("Deployment", "web", **held()))) == 2
    assert detector.memory.get("Deployment", "ns", "web", "uid-Deployment-web").hold_warned == ""
    assert len(run(workload("Deployment", "web", **{HOLD_ANNOTATION: "freeze please"}))) == 3


def test_a_workload_outside_the_policy_gets_no_hold_warning():
    # Nothing would patch it, so its hold is never read.
    kube = KindKube([{"metadata": {"name": "a", "generation": 1, "annotations": {}},
                      "spec": {"namespaceSelector": {"matchLabels": {"team": "x"}}}}])
    detector = Detector(kube=kube, registry=outdated_registry(), clock=lambda: NOW)
    detector.observe("ADDED", workload("Deployment", "web", **{HOLD_ANNOTATION: "freeze"}),
                     kind="Deployment")
    asyncio.run(detector.evaluate_all())
    assert kube.state_of("Deployment", "web")["state"] == "NotAdmitted"
    assert not [e for e in kube.events if e["reason"] == reasons.HOLD_IGNORED]


def test_a_hold_warning_the_api_server_refused_is_posted_next_pass():
    from imagepatch.adapters.errors import TransientError
    from imagepatch.model.names import REQUESTED_AT_ANNOTATION

    class Refusing(KindKube):
        refuse = True

        async def emit_event(self, **kw: Any) -> None:
            if self.refuse and kw["reason"] == reasons.HOLD_IGNORED:
                raise TransientError("events are down", reason="ServerError")
            await super().emit_event(**kw)

    kube = Refusing([{"metadata": {"name": "a", "generation": 1, "annotations": {}},
                      "spec": {"namespaceSelector": {}}}])
    detector = Detector(kube=kube, registry=outdated_registry(), clock=lambda: NOW)
    web = workload("Deployment", "web", **{HOLD_ANNOTATION: "freeze"})
    detector.observe("ADDED", web, kind="Deployment")
    asyncio.run(detector.evaluate_all())
    assert not [e for e in kube.events if e["reason"] == reasons.HOLD_IGNORED]
    assert detector.memory.get("Deployment", "ns", "web", "uid-Deployment-web").hold_warned == ""
    kube.refuse = False
    kube.policies[0]["metadata"]["annotations"][REQUESTED_AT_ANNOTATION] = "now"
    asyncio.run(detector.evaluate_all())
    assert len([e for e in kube.events if e["reason"] == reasons.HOLD_IGNORED]) == 1


def test_setting_or_releasing_a_hold_makes_the_workload_due_again():
    from imagepatch.core.detection.workload import inputs

    free = workload("Deployment", "web")
    assert inputs(free) != inputs(workload("Deployment", "web", **held()))


# --- the rollout: a held target is not started; one in flight goes on -----------------------

def test_the_rollout_skips_a_held_target_with_a_warning():
    from imagepatch.reconcile.rollouts import reconcile_imagepatch
    from tests.support.memkube import MemoryKube

    app, digest = "registry.local/app", "sha256:" + "a" * 64
    kube = MemoryKube()
    kube.add_policy("pol", {"namespaceSelector": {}})
    dep = kube.add_workload("Deployment", "shop", "web", image=f"{app}:1.4", policy="pol")
    dep["metadata"].setdefault("annotations", {}).update(held(reason="freeze", by="erin"))
    kube.add_patch("p1", {"image": app, "policy": "pol", "reason": "Manual", "targetDigest": digest})
    for _ in range(3):
        asyncio.run(reconcile_imagepatch(name="p1", kube=kube, clock=lambda: NOW))
    [entry] = kube.patches["p1"]["status"]["rollouts"]
    assert (entry["phase"], entry["reason"]) == ("Skipped", "Held"), entry
    assert "held until 2026-12-06T12:00:00Z by erin: freeze" in entry["message"]
    assert kube.calls["set_container_image"] == 0
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"{app}:1.4"
    [event] = [e for e in kube.events if e["reason"] == "Held"]
    assert "erin" in event["message"]


def test_a_hold_set_while_a_target_is_being_patched_does_not_stop_it():
    from imagepatch.reconcile.rollouts import reconcile_imagepatch
    from tests.support.memkube import MemoryKube

    app, digest = "registry.local/app", "sha256:" + "a" * 64
    kube = MemoryKube()
    kube.add_policy("pol", {"namespaceSelector": {}})
    dep = kube.add_workload("Deployment", "shop", "web", image=f"{app}:1.4", policy="pol")
    kube.add_patch("p1", {"image": app, "policy": "pol", "reason": "Manual", "targetDigest": digest})
    write = kube.set_container_image

    async def held_as_it_is_written(*args: Any, **kwargs: Any) -> Any:
        # The target is Patching (recorded before the write): the owner asks for a hold now.
        dep["metadata"].setdefault("annotations", {}).update(held())
        return await write(*args, **kwargs)

    kube.set_container_image = held_as_it_is_written  # type: ignore[method-assign]
    for _ in range(3):
        asyncio.run(reconcile_imagepatch(name="p1", kube=kube, clock=lambda: NOW))
    [entry] = kube.patches["p1"]["status"]["rollouts"]
    assert entry["phase"] == "Gating", entry
    assert HOLD_ANNOTATION in dep["metadata"]["annotations"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"{app}:1.4@{digest}"
