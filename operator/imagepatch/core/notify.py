"""What a notification says, and how each sink type wants it shaped (pure).

A :class:`Notification` is built from what the operator already recorded: an
ImagePatch whose phase just changed (:func:`for_patch`) or a workload whose
evaluated state just changed (:func:`for_workload`). It says what changed:
each workload (kind, namespace, name, container), the reference it ran and
the one written (digest-pinned), the reason, the findings the patch fixes,
and for an approval the exact commands to approve or reject.

The renderers turn it into each sink's payload: a Slack incoming webhook's
Block Kit message (:func:`slack_payload`), a Microsoft Teams Workflows
webhook's Adaptive Card 1.4 message (:func:`teams_payload`), the signed JSON
document of a generic webhook (:func:`webhook_payload`, :func:`signature`:
``X-Signature: sha256=<hex>`` over the body, as Flux's ``generic-hmac``
provider sends), and an SNS ``Publish`` (:func:`sns_publish`). Everything
shown is bounded (at most :data:`MAX_CHANGES` workloads listed, long texts
clipped) and, for Slack's mrkdwn, escaped: workload names and messages are
written by tenants.

Notification keys (:attr:`Notification.key`) deduplicate: one per patch and
reason, one per workload, state and running digests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagepatch.core.rollout.context import approval_hint, target_digest
from imagepatch.model.imagepatch import ApprovalDecision, ImagePatch, Phase, TargetPhase

# Reasons (the phase names and states the operator records, model/policy.NOTIFY_REASONS).
PATCHED = "Patched"
ROLLED_BACK = "RolledBack"
FAILED = "Failed"
AWAITING_APPROVAL = "AwaitingApproval"
VULNERABLE = "Vulnerable"
BASE_IMAGE_OUTDATED = "BaseImageOutdated"

_PHASE_REASONS = {
    Phase.SUCCEEDED: PATCHED,
    Phase.ROLLED_BACK: ROLLED_BACK,
    Phase.FAILED: FAILED,
    Phase.AWAITING_APPROVAL: AWAITING_APPROVAL,
}
_SEVERITY = {
    PATCHED: "info",
    AWAITING_APPROVAL: "info",
    ROLLED_BACK: "warning",
    VULNERABLE: "warning",
    BASE_IMAGE_OUTDATED: "warning",
    FAILED: "error",
}
SCHEMA = "imagepatch.dev/notification/v1"
MAX_CHANGES = 10  # workloads listed in one message; the rest are counted
_TEXT_LIMIT = 300  # one workload's detail
_SNS_SUBJECT_LIMIT = 100  # SNS: at most 100 characters, ASCII, no line breaks


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """One container of one workload: what it ran, what it runs (or would) now."""

    kind: str
    namespace: str
    name: str
    container: str
    old: str = ""  # the reference it ran, pinned to the digest that ran when known
    new: str = ""  # the reference written (or to be written), digest-pinned
    outcome: str = ""  # its rollout phase (Healthy, RolledBack, ...) or its state
    detail: str = ""

    @property
    def workload(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} ({self.container})"


@dataclass(frozen=True, kw_only=True, slots=True)
class Notification:
    key: str  # deduplication: one per patch and reason (or workload, state, digests)
    reason: str
    severity: str  # info | warning | error
    title: str
    summary: str  # one line of plain text
    policy: str
    at: str  # when it happened (RFC 3339)
    patch: str = ""
    image: str = ""
    patch_reason: str = ""  # why the patch was made (BaseImageOutdated, Vulnerable, Manual)
    changes: tuple[Change, ...] = ()
    findings_label: str = ""
    findings: tuple[str, ...] = ()
    approve: str = ""  # the command that approves (AwaitingApproval only)
    reject: str = ""

    def as_document(self) -> dict[str, Any]:
        """The JSON document a webhook (and SNS's machine subscribers) receives."""
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "id": self.key,
            "reason": self.reason,
            "severity": self.severity,
            "title": self.title,
            "message": self.summary,
            "policy": self.policy,
            "timestamp": self.at,
            "workloads": [
                {"kind": c.kind, "namespace": c.namespace, "name": c.name,
                 "container": c.container, "oldImage": c.old, "newImage": c.new,
                 "outcome": c.outcome, "message": c.detail}
                for c in self.changes
            ],
        }
        if self.patch:
            doc["imagePatch"] = {"name": self.patch, "image": self.image,
                                 "reason": self.patch_reason}
        if self.findings_label:
            doc["findings"] = {"label": self.findings_label, "ids": list(self.findings)}
        if self.approve:
            doc["approve"] = {"command": self.approve, "rejectCommand": self.reject}
        return doc


# --- building it --------------------------------------------------------------------


def patch_reason(before: Phase, after: Phase) -> str | None:
    """The notification reason of a phase change (None: no change, or nothing to say)."""
    if before == after:
        return None
    return _PHASE_REASONS.get(after)


def _ref(image: str, tag: str, digest: str) -> str:
    return image + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _last_message(patch: ImagePatch) -> str:
    history = patch.status.history
    return str((history[-1] if history else {}).get("message") or "see the ImagePatch")


def reject_command(patch: ImagePatch) -> str:
    body = {"spec": {"approval": {"decision": str(ApprovalDecision.REJECTED), "by": "<you>",
                                  "reason": "<why>"}}}
    return (f"kubectl patch imagepatch {patch.name} --type merge "
            f"-p '{json.dumps(body, separators=(',', ':'))}'")


def for_patch(patch: ImagePatch, *, reason: str, at: str) -> Notification | None:
    """What to say about ``patch`` (as recorded now) for ``reason``; None if nothing.

    ``Patched`` needs at least one target patched and healthy: a patch that
    ended Succeeded with every target skipped (already up to date) changed
    nothing worth a message.
    """
    entries = patch.status.rollouts
    digest = target_digest(patch) or patch.status.target_digest
    if entries:
        changes = tuple(
            Change(kind=e.target.kind, namespace=e.target.namespace, name=e.target.name,
                   container=e.target.container, old=e.restore_image,
                   new=e.target_image or _ref(patch.image, patch.tag, digest),
                   outcome=str(e.phase), detail=_clip(e.message, _TEXT_LIMIT))
            for e in entries
        )
    else:
        changes = tuple(
            Change(kind=t.kind, namespace=t.namespace, name=t.name, container=t.container,
                   old=_ref(patch.image, patch.tag, patch.current_digest),
                   new=_ref(patch.image, patch.tag, digest) if digest
                   else f"a rebuild of {_ref(patch.image, patch.tag, '')}",
                   outcome=str(TargetPhase.PENDING))
            for t in patch.targets
        )
    healthy = sum(1 for e in entries if e.phase == TargetPhase.HEALTHY)
    if reason == PATCHED and not healthy:
        return None
    image = _ref(patch.image, patch.tag, "")
    findings = patch.evidence_findings or ()
    label = {PATCHED: "Findings fixed", AWAITING_APPROVAL: "Findings it fixes"}.get(
        reason, "Findings still open")
    count = f"{len(changes)} workload{'s' if len(changes) != 1 else ''}"
    title, summary = {
        PATCHED: (f"Patched: {image}",
                  f"{healthy} of {len(entries)} targets of {image} now run "
                  f"{digest or 'the new digest'} and passed the health gate"),
        ROLLED_BACK: (f"Rolled back: {image}",
                      f"the new image of {image} failed its health gate and was rolled back: "
                      f"{_clip(_last_message(patch), _TEXT_LIMIT)}"),
        FAILED: (f"Failed: {image}",
                 f"the patch of {image} failed: {_clip(_last_message(patch), _TEXT_LIMIT)}"),
        AWAITING_APPROVAL: (f"Awaiting approval: {image}",
                            f"a patch of {image} ({count}) waits for approval"),
    }.get(reason, (f"{reason}: {image}", f"{reason}: {image}"))
    approve = reject = ""
    if reason == AWAITING_APPROVAL:
        approve = approval_hint(patch).removeprefix("approve with: ")
        reject = reject_command(patch)
    return Notification(
        key=f"imagepatch/{patch.name}/{reason}",
        reason=reason,
        severity=_SEVERITY.get(reason, "info"),
        title=title,
        summary=summary,
        policy=patch.policy,
        at=at,
        patch=patch.name,
        image=image,
        patch_reason=patch.reason,
        changes=changes,
        findings_label=label if findings else "",
        findings=tuple(findings),
        approve=approve,
        reject=reject,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class ContainerFinding:
    """One container of a workload whose state changed, as detection saw it."""

    name: str
    image: str
    digest: str = ""
    state: str = ""
    reason: str = ""  # why (a Patching container's reason is what it is patched for)
    message: str = ""
    by_severity: Mapping[str, int] | None = None


def for_workload(
    *, policy: str, kind: str, namespace: str, name: str, state: str, message: str,
    containers: Sequence[ContainerFinding], at: str, patching: bool = False,
) -> Notification:
    """What to say about a workload that turned ``state`` (Vulnerable, BaseImageOutdated).

    ``patching``: detection opened a patch for it in the same pass (its
    recorded state is then Patching, with ``state`` as its containers' reason).
    """
    affected = [c for c in containers if state in (c.state, c.reason)] or list(containers)
    changes = tuple(
        Change(kind=kind, namespace=namespace, name=name, container=c.name,
               old=c.image if "@" in c.image or not c.digest else f"{c.image}@{c.digest}",
               outcome=state, detail=_clip(c.message, _TEXT_LIMIT))
        for c in affected
    )
    counts: dict[str, int] = {}
    for c in affected:
        for severity, n in (c.by_severity or {}).items():
            counts[severity] = counts.get(severity, 0) + n
    findings = tuple(f"{n} {severity}" for severity, n in counts.items() if n)
    digests = ",".join(sorted(c.digest for c in affected if c.digest))
    what = "runs findings over the baseline" if state == VULNERABLE else "runs an outdated base"
    return Notification(
        key=f"workload/{kind}/{namespace}/{name}/{state}/{digests}",
        reason=state,
        severity=_SEVERITY.get(state, "warning"),
        title=f"{state}: {kind} {namespace}/{name}",
        summary=f"{kind} {namespace}/{name} {what}: {_clip(message, _TEXT_LIMIT)}"
        + ("; a patch for it was opened" if patching else ""),
        policy=policy,
        at=at,
        changes=changes,
        findings_label="Findings over the baseline" if findings else "",
        findings=findings,
    )


# --- shaping it ---------------------------------------------------------------------


def _listed(changes: Sequence[Change]) -> tuple[Sequence[Change], int]:
    return changes[:MAX_CHANGES], max(len(changes) - MAX_CHANGES, 0)


def _mrkdwn(text: str) -> str:
    """Slack's escaping: &, < and > are control characters in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    # A backtick would end the code span early: show it as a quote instead.
    return f"`{_mrkdwn(text.replace('`', chr(39)))}`"


def slack_payload(n: Notification) -> dict[str, Any]:
    """A Slack incoming webhook message: ``text`` (the fallback) and Block Kit ``blocks``."""
    shown, more = _listed(n.changes)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(n.title, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(_mrkdwn(n.summary), 3000)}},
    ]
    for c in shown:
        lines = [f"*{_mrkdwn(c.workload)}*: {_mrkdwn(c.outcome)}"]
        if c.old:
            lines.append(f"from {_code(c.old)}")
        if c.new:
            lines.append(f"to {_code(c.new)}")
        if c.detail:
            lines.append(_mrkdwn(c.detail))
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": _clip("\n".join(lines), 3000)}})
    if more:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"and {more} more workloads (see the ImagePatch)"}]})
    if n.findings:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(
            f"*{n.findings_label}:* " + ", ".join(_mrkdwn(f) for f in n.findings), 3000)}})
    if n.approve:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(
            f"*To approve:*\n```{_mrkdwn(n.approve)}```\n*To reject:*\n```{_mrkdwn(n.reject)}```",
            3000)}})
    context = [f"policy {_code(n.policy)}"]
    if n.patch:
        context.append(f"ImagePatch {_code(n.patch)} ({_mrkdwn(n.patch_reason)})")
    context.append(_mrkdwn(n.at))
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": _clip(" · ".join(context), 3000)}]})
    return {"text": _clip(f"{n.title}: {n.summary}", 3000), "blocks": blocks}


def teams_payload(n: Notification) -> dict[str, Any]:
    """A Teams Workflows webhook message: one Adaptive Card (1.4) attachment."""
    color = {"error": "attention", "warning": "warning"}.get(n.severity, "good")
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": n.title, "size": "large", "weight": "bolder",
         "color": color, "wrap": True},
        {"type": "TextBlock", "text": n.summary, "wrap": True},
    ]
    shown, more = _listed(n.changes)
    for c in shown:
        facts = [{"title": "Outcome", "value": c.outcome}]
        if c.old:
            facts.append({"title": "From", "value": c.old})
        if c.new:
            facts.append({"title": "To", "value": c.new})
        if c.detail:
            facts.append({"title": "Detail", "value": c.detail})
        body.append({"type": "Container", "separator": True, "items": [
            {"type": "TextBlock", "text": c.workload, "weight": "bolder", "wrap": True},
            {"type": "FactSet", "facts": facts},
        ]})
    if more:
        body.append({"type": "TextBlock", "text": f"and {more} more workloads (see the ImagePatch)",
                     "isSubtle": True, "wrap": True})
    if n.findings:
        body.append({"type": "TextBlock", "wrap": True,
                     "text": f"**{n.findings_label}:** " + ", ".join(n.findings)})
    if n.approve:
        body += [
            {"type": "TextBlock", "text": "To approve:", "weight": "bolder", "wrap": True},
            {"type": "TextBlock", "text": n.approve, "fontType": "Monospace", "wrap": True},
            {"type": "TextBlock", "text": "To reject:", "weight": "bolder", "wrap": True},
            {"type": "TextBlock", "text": n.reject, "fontType": "Monospace", "wrap": True},
        ]
    footer = [{"title": "Policy", "value": n.policy}]
    if n.patch:
        footer.append({"title": "ImagePatch", "value": f"{n.patch} ({n.patch_reason})"})
    footer.append({"title": "At", "value": n.at})
    body.append({"type": "FactSet", "separator": True, "facts": footer})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    }
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
         "content": card}]}


def webhook_payload(n: Notification) -> bytes:
    """The generic webhook's body: the document as compact JSON (the bytes that are signed)."""
    return json.dumps(n.as_document(), separators=(",", ":"), sort_keys=True).encode()


def signature(body: bytes, key: bytes) -> str:
    """The ``X-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _text(n: Notification) -> str:
    lines = [n.title, "", n.summary, ""]
    shown, more = _listed(n.changes)
    for c in shown:
        lines.append(f"- {c.workload}: {c.outcome}")
        lines += [f"    from {c.old}"] if c.old else []
        lines += [f"    to   {c.new}"] if c.new else []
        lines += [f"    {c.detail}"] if c.detail else []
    if more:
        lines.append(f"- and {more} more workloads")
    if n.findings:
        lines += ["", f"{n.findings_label}: {', '.join(n.findings)}"]
    if n.approve:
        lines += ["", "To approve:", f"  {n.approve}", "To reject:", f"  {n.reject}"]
    lines += ["", f"Policy: {n.policy}"]
    lines += [f"ImagePatch: {n.patch} ({n.patch_reason})"] if n.patch else []
    lines.append(f"At: {n.at}")
    return "\n".join(lines)


def _subject(title: str) -> str:
    ascii_only = "".join(ch if " " <= ch <= "~" else "?" for ch in title)
    return _clip(f"imagepatch: {ascii_only}", _SNS_SUBJECT_LIMIT)


def sns_publish(n: Notification) -> dict[str, str]:
    """``Publish`` parameters: readable text for email and SMS, the JSON document for the rest.

    ``MessageStructure: json`` lets each protocol have its own body: ``default``
    (and ``email``) get the text, queues, functions and HTTP endpoints get
    the same JSON document a webhook receives.
    """
    text = _text(n)
    document = json.dumps(n.as_document(), separators=(",", ":"), sort_keys=True)
    per_protocol = {"default": text, "email": text, "sqs": document, "lambda": document,
                    "http": document, "https": document, "firehose": document}
    return {"Subject": _subject(n.title), "MessageStructure": "json",
            "Message": json.dumps(per_protocol)}


def render(sink_type: str, n: Notification) -> Any:
    """The payload of ``n`` for a sink type (the webhook's is bytes, to be signed)."""
    renderers = {"Slack": slack_payload, "MSTeams": teams_payload, "Webhook": webhook_payload,
                 "SNS": sns_publish}
    return renderers[sink_type](n)

