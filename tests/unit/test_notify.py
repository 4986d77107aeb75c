"""Notifications: the policy's sinks, what a message says, each sink's payload, the signature."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

import pytest

from imagepatch.core import notify
from imagepatch.core.policy import notifications_condition, policy_status
from imagepatch.core.rollout.context import approval_hint
from imagepatch.model.errors import SpecError
from imagepatch.model.imagepatch import Phase, parse_imagepatch
from imagepatch.model.policy import (
    DEFAULT_NOTIFY_REASONS,
    NotificationSink,
    SinkType,
    parse_policy_spec,
)

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
AT = "2026-12-05T12:00:00Z"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:patches"


def spec(*sinks: dict) -> dict:
    return {"namespaceSelector": {}, "notifications": list(sinks)}


# --- the policy's sinks -------------------------------------------------------------------


def test_sinks_parse_with_the_default_reasons() -> None:
    parsed = parse_policy_spec(spec(
        {"name": "team", "type": "Slack", "secretRef": {"name": "slack-hook"}},
        {"name": "audit", "type": "SNS", "topicArn": TOPIC, "reasons": ["Failed"]},
    )).notifications
    assert parsed == (
        NotificationSink(name="team", type=SinkType.SLACK, secret_name="slack-hook",
                         reasons=frozenset(DEFAULT_NOTIFY_REASONS)),
        NotificationSink(name="audit", type=SinkType.SNS, topic_arn=TOPIC,
                         reasons=frozenset({"Failed"})),
    )
    assert set(DEFAULT_NOTIFY_REASONS) == {"Patched", "RolledBack", "Failed", "AwaitingApproval",
                                          "Vulnerable"}
    assert parse_policy_spec({"namespaceSelector": {}}).notifications == ()


@pytest.mark.parametrize(("sink", "field", "words"), [
    ({"name": "x", "type": "SNS"}, "spec.notifications[0].topicArn", "required when type is SNS"),
    ({"name": "x", "type": "SNS", "topicArn": TOPIC, "secretRef": {"name": "s"}},
     "spec.notifications[0].secretRef", "must not be set"),
    ({"name": "x", "type": "Webhook"}, "spec.notifications[0].secretRef", "required"),
    ({"name": "x", "type": "Slack", "secretRef": {"name": "s"}, "topicArn": TOPIC},
     "spec.notifications[0].topicArn", "only be set when type is SNS"),
    ({"name": "x", "type": "SNS", "topicArn": "arn:aws:sqs:eu-west-1:123456789012:q"},
     "spec.notifications[0].topicArn", "SNS topic ARN"),
    ({"name": "x", "type": "Email", "secretRef": {"name": "s"}}, "spec.notifications[0].type",
     "must be one of"),
    ({"name": "X_", "type": "Slack", "secretRef": {"name": "s"}}, "spec.notifications[0].name",
     "DNS label"),
    ({"name": "x", "type": "Slack", "secretRef": {"name": "Bad_Name"}},
     "spec.notifications[0].secretRef.name", "object name"),
    ({"name": "x", "type": "Slack", "secretRef": {"name": "s"}, "reasons": ["Closed"]},
     "spec.notifications[0].reasons[0]", "must be one of"),
    ({"name": "x", "type": "Slack", "secretRef": {"name": "s"}, "reasons": []},
     "spec.notifications[0].reasons", "must not be empty"),
])
def test_a_bad_sink_names_its_field(sink: dict, field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_policy_spec(spec(sink))
    assert err.value.field == field and words in str(err.value)


def test_sink_names_are_unique_and_sinks_bounded() -> None:
    one = {"name": "x", "type": "Slack", "secretRef": {"name": "s"}}
    with pytest.raises(SpecError, match=r"spec\.notifications\[1\]\.name"):
        parse_policy_spec(spec(one, one))
    many = [{**one, "name": f"s{i}"} for i in range(11)]
    with pytest.raises(SpecError, match="at most 10"):
        parse_policy_spec(spec(*many))


# --- what a message says ------------------------------------------------------------------


def patch(phase: str, *, rollouts: list[dict] | None = None, targets: list[dict] | None = None,
          target_digest: str = NEW, history: list[dict] | None = None) -> object:
    return parse_imagepatch({
        "metadata": {"name": "app-1a2b3c"},
        "spec": {"image": "registry.local/payments/app", "tag": "1.4", "policy": "prod",
                 "reason": "BaseImageOutdated", "currentDigest": OLD,
                 "targetDigest": target_digest, "targets": targets or [],
                 "evidence": {"findings": [{"id": "CVE-2026-1111"}, {"id": "CVE-2026-2222"}]}},
        "status": {"phase": phase, "rollouts": rollouts or [], "history": history or []},
    })


WEB = {"kind": "Deployment", "namespace": "team-a", "name": "web", "container": "app"}
PINNED_OLD = f"registry.local/payments/app:1.4@{OLD}"
PINNED_NEW = f"registry.local/payments/app:1.4@{NEW}"


def test_the_phases_worth_a_message() -> None:
    assert notify.patch_reason(Phase.ROLLING_OUT, Phase.SUCCEEDED) == "Patched"
    assert notify.patch_reason(Phase.ROLLING_OUT, Phase.ROLLED_BACK) == "RolledBack"
    assert notify.patch_reason(Phase.ROLLING_OUT, Phase.FAILED) == "Failed"
    assert notify.patch_reason(Phase.PENDING, Phase.AWAITING_APPROVAL) == "AwaitingApproval"
    assert notify.patch_reason(Phase.FAILED, Phase.FAILED) is None  # no change
    assert notify.patch_reason(Phase.PENDING, Phase.ROLLING_OUT) is None
    assert notify.patch_reason(Phase.PENDING, Phase.CLOSED) is None


def test_patched_says_which_workload_moved_from_what_to_what_and_the_findings_fixed() -> None:
    done = patch("Succeeded", rollouts=[{**WEB, "phase": "Healthy", "previousImage": "registry.local/payments/app:1.4",
                                         "rollbackImage": PINNED_OLD, "targetImage": PINNED_NEW}])
    note = notify.for_patch(done, reason="Patched", at=AT)
    assert note is not None
    assert note.key == "imagepatch/app-1a2b3c/Patched"
    assert note.severity == "info" and note.title == "Patched: registry.local/payments/app:1.4"
    [change] = note.changes
    assert (change.kind, change.namespace, change.name, change.container) == (
        "Deployment", "team-a", "web", "app")
    assert (change.old, change.new, change.outcome) == (PINNED_OLD, PINNED_NEW, "Healthy")
    assert note.findings == ("CVE-2026-1111", "CVE-2026-2222")
    assert note.findings_label == "Findings fixed"
    assert "1 of 1 targets" in note.summary and NEW in note.summary
    assert not note.approve


def test_nothing_patched_is_no_patched_message() -> None:
    skipped = patch("Succeeded", rollouts=[{**WEB, "phase": "Skipped"}])
    assert notify.for_patch(skipped, reason="Patched", at=AT) is None


def test_rolled_back_and_failed_say_why_and_what_is_still_open() -> None:
    entry = {**WEB, "phase": "RolledBack", "rollbackImage": PINNED_OLD, "targetImage": PINNED_NEW,
             "message": "web-1/app: CrashLoopBackOff"}
    back = notify.for_patch(patch("RolledBack", rollouts=[entry], history=[
        {"phase": "RolledBack", "at": AT, "message": "team-a/web/app rolled back"}]),
        reason="RolledBack", at=AT)
    assert back is not None and back.severity == "warning"
    assert back.changes[0].detail == "web-1/app: CrashLoopBackOff"
    assert back.findings_label == "Findings still open"
    failed = notify.for_patch(patch("Failed", rollouts=[{**entry, "phase": "Failed"}], history=[
        {"phase": "Failed", "at": AT, "message": "rollback failed: x" * 200}]), reason="Failed", at=AT)
    assert failed is not None and failed.severity == "error"
    assert failed.summary.startswith("the patch of registry.local/payments/app:1.4 failed: rollback")
    assert len(failed.summary) < 400  # clipped
    nothing = notify.for_patch(patch("Failed"), reason="Failed", at=AT)
    assert nothing is not None and "see the ImagePatch" in nothing.summary


def test_awaiting_approval_gives_the_exact_commands() -> None:
    waiting = patch("AwaitingApproval", targets=[WEB])
    note = notify.for_patch(waiting, reason="AwaitingApproval", at=AT)
    assert note is not None
    # The same command the patch's own status gives (core/rollout/context.py).
    assert approval_hint(waiting) == f"approve with: {note.approve}"
    assert note.approve.startswith("kubectl patch imagepatch app-1a2b3c --type merge -p '")
    body = json.loads(note.approve.split("-p ", 1)[1].strip("'"))
    assert body == {"spec": {"approval": {"decision": "Approved", "by": "<you>"}}}
    rejected = json.loads(note.reject.split("-p ", 1)[1].strip("'"))
    assert rejected["spec"]["approval"]["decision"] == "Rejected"
    [change] = note.changes
    assert (change.old, change.new, change.outcome) == (PINNED_OLD, PINNED_NEW, "Pending")
    assert note.findings_label == "Findings it fixes"
    # A rebuild not made yet: the new reference says so.
    unbuilt = notify.for_patch(patch("AwaitingApproval", targets=[WEB], target_digest=""),
                               reason="AwaitingApproval", at=AT)
    assert unbuilt is not None
    assert unbuilt.changes[0].new == "a rebuild of registry.local/payments/app:1.4"


def test_a_workload_turning_vulnerable() -> None:
    note = notify.for_workload(
        policy="prod", kind="StatefulSet", namespace="team-b", name="db", state="Vulnerable",
        message="2 findings over the baseline", at=AT,
        containers=[
            notify.ContainerFinding(name="db", image="registry.local/db:16", digest=OLD,
                                    state="Vulnerable", message="CVE-2026-3333 (CRITICAL)",
                                    by_severity={"CRITICAL": 1, "HIGH": 1}),
            notify.ContainerFinding(name="exporter", image=f"registry.local/exp:1@{NEW}",
                                    state="Compliant"),
        ])
    assert note.reason == "Vulnerable" and note.severity == "warning"
    assert note.key == f"workload/StatefulSet/team-b/db/Vulnerable/{OLD}"
    [change] = note.changes
    assert change.old == f"registry.local/db:16@{OLD}" and change.container == "db"
    assert note.findings == ("1 CRITICAL", "1 HIGH")
    assert "team-b/db" in note.summary and not note.patch
    outdated = notify.for_workload(
        policy="prod", kind="Deployment", namespace="n", name="w", state="BaseImageOutdated",
        message="base moved", at=AT,
        containers=[notify.ContainerFinding(name="app", image=f"r/a:1@{NEW}", digest=NEW)])
    assert outdated.changes[0].old == f"r/a:1@{NEW}" and "outdated base" in outdated.summary
    assert not outdated.findings_label


# --- each sink's payload ------------------------------------------------------------------


def approval_note() -> notify.Notification:
    note = notify.for_patch(patch("AwaitingApproval", targets=[WEB]), reason="AwaitingApproval",
                            at=AT)
    assert note is not None
    return note


def test_slack_blocks() -> None:
    payload = notify.slack_payload(approval_note())
    assert payload["text"].startswith("Awaiting approval: registry.local/payments/app:1.4")
    blocks = payload["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text",
                         "text": "Awaiting approval: registry.local/payments/app:1.4"}}
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert any("*Deployment team-a/web (app)*: Pending" in t and f"`{PINNED_OLD}`" in t
               and f"`{PINNED_NEW}`" in t for t in texts)
    assert any("CVE-2026-1111" in t for t in texts)
    assert any("*To approve:*\n```kubectl patch imagepatch app-1a2b3c" in t for t in texts)
    assert blocks[-1]["type"] == "context" and "`prod`" in blocks[-1]["elements"][0]["text"]
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")


def test_slack_escapes_what_tenants_write_and_bounds_the_list() -> None:
    rollouts = [{**WEB, "name": f"web{i}", "phase": "Healthy", "targetImage": PINNED_NEW,
                 "message": "<!channel> & `x`"} for i in range(13)]
    note = notify.for_patch(patch("Succeeded", rollouts=rollouts), reason="Patched", at=AT)
    assert note is not None
    blocks = notify.slack_payload(note)["blocks"]
    text = json.dumps(blocks)
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp;" in text
    listed = [b for b in blocks if b["type"] == "section" and "Deployment team-a/web" in b["text"]["text"]]
    assert len(listed) == notify.MAX_CHANGES
    assert any("and 3 more workloads" in e["text"] for b in blocks if b["type"] == "context"
               for e in b["elements"])
    assert len(blocks) <= 50


def test_teams_adaptive_card_through_a_workflow() -> None:
    payload = notify.teams_payload(approval_note())
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["body"][0]["text"] == "Awaiting approval: registry.local/payments/app:1.4"
    container = next(b for b in card["body"] if b["type"] == "Container")
    facts = {f["title"]: f["value"] for f in container["items"][1]["facts"]}
    assert facts == {"Outcome": "Pending", "From": PINNED_OLD, "To": PINNED_NEW}
    commands = [b["text"] for b in card["body"] if b.get("fontType") == "Monospace"]
    assert commands[0].startswith("kubectl patch imagepatch app-1a2b3c") and "Rejected" in commands[1]
    failed = notify.for_patch(patch("Failed"), reason="Failed", at=AT)
    assert failed is not None
    assert notify.teams_payload(failed)["attachments"][0]["content"]["body"][0]["color"] == "attention"
    many = notify.for_patch(patch("Succeeded", rollouts=[
        {**WEB, "name": f"w{i}", "phase": "Healthy", "message": "ok"} for i in range(12)]),
        reason="Patched", at=AT)
    assert many is not None
    body = notify.teams_payload(many)["attachments"][0]["content"]["body"]
    assert sum(1 for b in body if b["type"] == "Container") == notify.MAX_CHANGES
    assert any("and 2 more" in b.get("text", "") for b in body)


def test_webhook_document_and_its_signature() -> None:
    note = approval_note()
    body = notify.webhook_payload(note)
    doc = json.loads(body)
    assert doc["schema"] == "imagepatch.dev/notification/v1"
    assert (doc["id"], doc["reason"], doc["severity"]) == (note.key, "AwaitingApproval", "info")
    assert doc["workloads"] == [{**WEB, "oldImage": PINNED_OLD, "newImage": PINNED_NEW,
                                 "outcome": "Pending", "message": ""}]
    assert doc["imagePatch"] == {"name": "app-1a2b3c", "image": "registry.local/payments/app:1.4",
                                 "reason": "BaseImageOutdated"}
    assert doc["findings"]["ids"] == ["CVE-2026-1111", "CVE-2026-2222"]
    assert doc["approve"]["command"] == note.approve
    # Flux's generic-hmac: X-Signature: sha256=<hex HMAC-SHA256 of the body>.
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert notify.signature(body, b"key") == f"sha256={expected}"
    assert notify.render("Webhook", note) == body


def test_sns_publish_text_for_people_json_for_machines() -> None:
    note = approval_note()
    params = notify.sns_publish(note)
    assert params["MessageStructure"] == "json"
    assert params["Subject"] == "imagepatch: Awaiting approval: registry.local/payments/app:1.4"
    per = json.loads(params["Message"])
    assert json.loads(per["sqs"]) == note.as_document()
    assert per["default"] == per["email"]
    assert "To approve:" in per["default"] and note.approve in per["default"]
    assert f"from {PINNED_OLD}" in per["default"] and "CVE-2026-1111" in per["default"]
    long = notify.Notification(key="k", reason="Failed", severity="error", title="é" * 200,
                               summary="s", policy="p", at=AT)
    subject = notify.sns_publish(long)["Subject"]
    assert len(subject) <= 100 and subject.isascii() and "\n" not in subject
    many = notify.for_patch(patch("Succeeded", rollouts=[
        {**WEB, "name": f"w{i}", "phase": "Healthy", "message": "ok"} for i in range(11)]),
        reason="Patched", at=AT)
    assert many is not None
    assert "and 1 more workloads" in json.loads(notify.sns_publish(many)["Message"])["default"]


def test_slack_and_sns_of_a_workload_message() -> None:
    note = notify.for_workload(policy="p", kind="Deployment", namespace="n", name="w",
                               state="Vulnerable", message="m", at=AT, containers=[
                                   notify.ContainerFinding(name="c", image="r/a:1", digest=OLD,
                                                           by_severity={"HIGH": 2})])
    blocks = notify.slack_payload(note)["blocks"]
    assert not any("ImagePatch" in e["text"] for b in blocks if b["type"] == "context"
                   for e in b["elements"])
    assert "Findings over the baseline: 2 HIGH" in json.loads(notify.sns_publish(note)["Message"])["default"]


# --- the condition ------------------------------------------------------------------------


def test_notifications_degraded_names_the_failing_sink() -> None:
    sinks = parse_policy_spec(spec({"name": "team", "type": "Slack", "secretRef": {"name": "s"}}))
    healthy = notifications_condition(sinks, {}, 3)
    assert healthy is not None and (healthy.status, healthy.reason) == ("False", "NotificationsDelivered")
    failing = {"notifications": {"failing": [
        {"sink": "team", "type": "Slack", "reason": "NotificationRejected",
         "message": "Slack sink 'team' refused the message with HTTP 404"},
        {"sink": "gone", "type": "Slack", "reason": "X", "message": "a removed sink"}]}}
    degraded = notifications_condition(sinks, failing, 3)
    assert degraded is not None and (degraded.status, degraded.reason) == ("True", "NotificationFailed")
    assert degraded.message == ("sink team (Slack): NotificationRejected: "
                                "Slack sink 'team' refused the message with HTTP 404")
    assert notifications_condition(parse_policy_spec({"namespaceSelector": {}}), failing, 3) is None


def test_policy_status_shows_and_drops_the_condition() -> None:
    now = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    body = {"metadata": {"name": "p", "generation": 2},
            "spec": spec({"name": "team", "type": "Slack", "secretRef": {"name": "s"}}),
            "status": {"notifications": {"failing": [
                {"sink": "team", "type": "Slack", "reason": "NotificationUnavailable", "message": "m"}]}}}
    conditions = {c["type"]: c for c in policy_status(body, now=now)["conditions"]}
    assert conditions["NotificationsDegraded"]["status"] == "True"
    body["spec"] = {"namespaceSelector": {}}
    body["status"]["conditions"] = list(conditions.values())
    conditions = {c["type"]: c for c in policy_status(body, now=now)["conditions"]}
    assert "NotificationsDegraded" not in conditions
