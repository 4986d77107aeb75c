"""Git write-back targets (``rollout.mode: GitWriteBack``): commit, wait for the apply, revert.

A GitOps tool (Flux, Argo CD) delivers the workload from Git, so the new
reference is not patched into the live object (the tool's next sync would undo
it) but committed to the repository the policy names; the tool applies it.
The steps of such a target, each recorded before its side effect:

1. ``Patching`` is recorded with ``gitBranch`` (what makes it a write-back
   target) and the pinned image, as for a patch.
2. The step asks for the commit (``GitWrite``); the reconciler finds it by the
   patch's ``Imagepatch-Patch`` trailer or makes and pushes it, and hands the
   result (``GitResult``) to the next plan, which records ``gitCommit``. A
   restart in between asks again and finds the same commit. With
   ``pullRequest`` the request from ``pushBranch`` is opened (or found open)
   and recorded as ``gitPullRequest``; a forge that refuses is asked again,
   its reason shown, never failing the target.
3. With a request recorded, the forge is asked every ``REVIEW_POLL`` what
   became of it (``gitPullRequestState``): while it is open the target waits
   for review, unbounded (a review may take days); closed without a merge
   fails the target (``PullRequestClosed``: nothing was applied, nothing is
   rolled back); merged records the commit the merge made and when
   (``gitMergeCommit``, ``gitMergedAt``).
4. It waits until the workload's live template carries the new reference
   (the tool applied it), at most ``gitWriteBack.applyTimeout`` from the merge
   (``startedAt`` without a request); then the same health gate as a patch.
5. A failed gate's rollback is a revert commit (``gitRevert``), the failed
   digest remembered first, pushed to ``branch`` itself even after a pull
   request (a crash-looping workload does not wait for a review; the revert
   restores what ran before, and carries the gate's verdict in its message);
   then it waits, bounded the same way, until the live template is back on
   the previous image, which must be available again.

A write-back that cannot be made (no file under ``path`` declares the image,
the line belongs to Flux's image automation, the credentials are refused)
fails the target with a reason and says what to fix; nothing was applied, so
nothing is rolled back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from imagepatch.core import reasons
from imagepatch.core.images import parse_image
from imagepatch.core.rollout.context import (
    GATE_POLL,
    Context,
    FailedDigest,
    GitResult,
    GitWrite,
    Step,
    Workload,
    container_of,
    describe,
)
from imagepatch.model.imagepatch import Phase, RolloutEntry, TargetPhase
from imagepatch.model.policy import GitWriteBack, RolloutMode
from imagepatch.model.times import format_time, parse_time_strict

# How soon a write-back that failed for a passing reason (the Git server did
# not answer, a push kept losing races) is tried again.
RETRY_POLL = 30.0
# How often the forge is asked what became of a pull request under review.
REVIEW_POLL = 60.0
# RolloutEntry.git_pull_request_state
PR_OPEN, PR_MERGED, PR_CLOSED = "Open", "Merged", "Closed"


def settings(ctx: Context) -> GitWriteBack | None:
    """The policy's write-back settings when its rollout mode is GitWriteBack."""
    policy = ctx.policy
    if policy is None or policy.rollout.mode is not RolloutMode.GIT_WRITE_BACK:
        return None
    return policy.rollout.git_write_back


def where(entry: RolloutEntry, ctx: Context) -> str:
    """The repository and branch, for messages."""
    wb = settings(ctx)
    return f"{wb.url} branch {entry.git_branch}" if wb else f"branch {entry.git_branch}"


def _reverted_on(ctx: Context, entry: RolloutEntry) -> str:
    """Where a revert goes: ``branch`` itself, also when the patch went to ``pushBranch``."""
    wb = settings(ctx)
    return f"{wb.url} branch {wb.branch}" if wb else where(entry, ctx)


def _result(ctx: Context, entry: RolloutEntry, *, revert: bool) -> GitResult | None:
    seen = ctx.git_result
    if seen is None or seen.target != entry.target or seen.revert != revert:
        return None
    return seen


def _timeout(ctx: Context) -> dt.timedelta:
    wb = settings(ctx)
    return wb.apply_timeout if wb else GitWriteBack(url="", secret_name="").apply_timeout


def _expired(ctx: Context, since: str) -> bool:
    started = parse_time_strict(since)
    return started is not None and ctx.now - started > _timeout(ctx)


def _fail(ctx: Context, *, index: int, reason: str, message: str, stall: str = "") -> Step:
    entry = ctx.entries[index]
    ctx.entries[index] = replace(entry, phase=TargetPhase.FAILED, reason=reason, message=message,
                                 finished_at=format_time(ctx.now))
    ctx.stop_after(index, reason=reason, why=message, gate_failed=False)
    ctx.phase = Phase.FAILED
    ctx.stalled = stall or reason
    ctx.message = f"{describe(entry.target)}: {message}"
    ctx.warn(entry.target, reason=reason, message=ctx.message)
    return ctx.end_or_go_on()


def _retry(ctx: Context, *, index: int, result: GitResult) -> Step:
    entry = ctx.entries[index]
    ctx.message = f"{describe(entry.target)}: {result.message}; trying again"
    ctx.waiting = result.reason
    ctx.entries[index] = replace(entry, message=ctx.message)
    return ctx.finish(requeue_after=RETRY_POLL)


def _wants_pull_request(ctx: Context, entry: RolloutEntry) -> bool:
    """``pullRequest`` with ``pushBranch``, and no request recorded for ``entry`` yet."""
    wb = settings(ctx)
    return bool(wb and wb.pull_request is not None and wb.push_branch
                and not entry.git_pull_request)


def _pull_request(ctx: Context, *, index: int, result: GitResult | None) -> Step:
    """Ask for the pull request from the push branch, record it, or say why it is not open.

    A forge that refuses or does not answer never fails the target: the commit
    is pushed and the request can be opened by hand; it is asked again every
    ``RETRY_POLL`` with the forge's reason shown, and the wait stays bounded by
    ``applyTimeout`` (no request is known whose review could take longer).
    """
    entry = ctx.entries[index]
    if result is None or not (result.pull_request_url or result.pull_request_reason):
        return ctx.finish(
            git=GitWrite(target=entry.target, image=entry.target_image,
                         previous=entry.previous_image, pull_request=True),
            again=True,
        )
    if result.pull_request_reason:
        ctx.message = (f"{describe(entry.target)}: committed {entry.git_commit[:12]} to "
                       f"{where(entry, ctx)}, but the pull request is not open: "
                       f"{result.pull_request_message}; trying again")
        ctx.waiting = result.pull_request_reason
        ctx.entries[index] = replace(entry, message=ctx.message)
        return ctx.finish(requeue_after=RETRY_POLL)
    ctx.entries[index] = entry = replace(
        entry, git_pull_request=result.pull_request_url,
        git_pull_request_number=result.pull_request_number,
        message=f"committed {entry.git_commit[:12]} to {where(entry, ctx)}; waiting for pull "
        f"request {result.pull_request_url} to be merged and applied",
    )
    ctx.message = f"rolling out to {describe(entry.target)}: {entry.message}"
    return ctx.finish(again=True)


def forward(ctx: Context, *, index: int) -> Step:
    """``Patching`` a write-back target whose live image is still the previous one."""
    entry = ctx.entries[index]
    result = _result(ctx, entry, revert=False)
    if not entry.git_commit:
        if result is None:
            return ctx.finish(
                git=GitWrite(target=entry.target, image=entry.target_image,
                             previous=entry.previous_image),
                again=True,
            )
        if result.reason and result.transient and not _expired(ctx, entry.started_at):
            return _retry(ctx, index=index, result=result)
        if result.reason:
            return _fail(ctx, index=index, reason=result.reason, message=result.message)
        ctx.entries[index] = entry = replace(
            entry, git_commit=result.sha, git_branch=result.branch or entry.git_branch,
            message=f"committed {result.sha[:12]} to {where(entry, ctx)}; waiting for the "
            "GitOps tool to apply it",
        )
        ctx.message = f"rolling out to {describe(entry.target)}: {entry.message}"
        if not _wants_pull_request(ctx, entry):
            return ctx.finish(again=True)
    if _in_review(ctx, entry):
        # A human review may take days: the wait for the merge is not bounded.
        return _review(ctx, index=index, result=result)
    if _expired(ctx, entry.git_merged_at or entry.started_at):
        return _fail(ctx, index=index, reason=reasons.GIT_APPLY_TIMEOUT,
                     message=_not_applied(ctx, entry))
    if _wants_pull_request(ctx, entry):
        return _pull_request(ctx, index=index, result=result)
    ctx.message = (f"rolling out to {describe(entry.target)}: waiting for the GitOps tool to "
                   f"apply commit {entry.git_commit[:12]} on {where(entry, ctx)}")
    return ctx.finish(requeue_after=GATE_POLL)


def _not_applied(ctx: Context, entry: RolloutEntry) -> str:
    if entry.git_merged_at:
        since = (f"pull request {entry.git_pull_request} was merged at {entry.git_merged_at}"
                 f"{_merge_commit(entry)}, but it was not applied within {_timeout(ctx)}")
        return (f"{since}: the workload still runs {entry.previous_image}. Check that the "
                "GitOps tool delivers this branch and path (its Kustomization or Application "
                "status says why not)")
    merge = (f"pull request {entry.git_pull_request}" if entry.git_pull_request
             else "the pull request")
    return (f"commit {entry.git_commit[:12]} on {where(entry, ctx)} was not applied "
            f"within {_timeout(ctx)}: the workload still runs {entry.previous_image}. Check that "
            "the GitOps tool delivers this branch and path (its Kustomization or Application "
            f"status says why not), or that {merge} was merged")


def _merge_commit(entry: RolloutEntry) -> str:
    return f" as {entry.git_merge_commit[:12]}" if entry.git_merge_commit else ""


def _in_review(ctx: Context, entry: RolloutEntry) -> bool:
    """A request is recorded for ``entry``, the policy still asks for requests, and the
    forge has not said it was merged."""
    wb = settings(ctx)
    return bool(wb and wb.pull_request is not None and entry.git_pull_request
                and entry.git_pull_request_number
                and entry.git_pull_request_state != PR_MERGED)


def _review(ctx: Context, *, index: int, result: GitResult | None) -> Step:
    """Ask the forge what became of the request; record it (open, merged, closed)."""
    entry = ctx.entries[index]
    url = entry.git_pull_request
    if result is None or not (result.pull_request_state or result.pull_request_reason):
        if entry.git_pull_request_state == PR_OPEN:  # the status says so while asking again
            ctx.message = f"rolling out to {describe(entry.target)}: waiting for review of {url}"
            ctx.waiting = reasons.PULL_REQUEST_OPEN
        return ctx.finish(
            git=GitWrite(target=entry.target, image=entry.target_image,
                         previous=entry.previous_image, poll_pull_request=True,
                         pull_request_number=entry.git_pull_request_number),
            again=True,
        )
    if result.pull_request_reason:  # the forge did not say: asked again, never failing
        ctx.message = (f"rolling out to {describe(entry.target)}: waiting for review of {url}; "
                       f"the forge did not say whether it was merged: "
                       f"{result.pull_request_message}")
        ctx.waiting = result.pull_request_reason
        ctx.entries[index] = replace(entry, message=ctx.message)
        return ctx.finish(requeue_after=REVIEW_POLL)
    if result.pull_request_state == "merged":
        merged_at = parse_time_strict(result.merged_at) if result.merged_at else None
        ctx.entries[index] = entry = replace(
            entry, git_pull_request_state=PR_MERGED, git_merge_commit=result.merge_commit,
            git_merged_at=format_time(merged_at or ctx.now))
        ctx.entries[index] = entry = replace(
            entry, message=f"pull request {url} was merged{_merge_commit(entry)}; waiting for "
            "the GitOps tool to apply it")
        ctx.message = f"rolling out to {describe(entry.target)}: {entry.message}"
        return ctx.finish(again=True)
    if result.pull_request_state == "closed":
        ctx.entries[index] = replace(entry, git_pull_request_state=PR_CLOSED)
        return _fail(
            ctx, index=index, reason=reasons.PULL_REQUEST_CLOSED,
            message=f"pull request {url} was closed without being merged: nothing was applied, "
            f"so nothing is rolled back; branch {entry.git_branch} is left as it is (delete it "
            "before a new patch pushes to it, or its commit comes along)")
    ctx.entries[index] = entry = replace(
        entry, git_pull_request_state=PR_OPEN,
        message=f"committed {entry.git_commit[:12]} to {where(entry, ctx)}; waiting for review "
        f"of {url}")
    ctx.message = f"rolling out to {describe(entry.target)}: waiting for review of {url}"
    ctx.waiting = reasons.PULL_REQUEST_OPEN
    return ctx.finish(requeue_after=REVIEW_POLL)


def rolling_back(ctx: Context, *, index: int, workload: Workload) -> Step | None:
    """``RollingBack`` a write-back target while the bad image is live: revert, then wait.

    None once the previous image is live again (the caller then checks it is
    available, as for any rollback) or when something else runs.
    """
    entry = ctx.entries[index]
    image = _live_image(workload, entry)
    if image != entry.target_image:
        return None
    if not entry.git_revert:
        result = _result(ctx, entry, revert=True)
        if result is None:
            failed = parse_image(entry.target_image).digest or ""
            return ctx.finish(
                git=GitWrite(
                    target=entry.target, image=entry.previous_image,
                    previous=entry.target_image, revert=True, commit=entry.git_commit,
                    merge_commit=entry.git_merge_commit,
                    pull_request_number=entry.git_pull_request_number,
                    why=entry.message,
                    failed=FailedDigest(digest=failed, key=ctx.patch.key, patch=ctx.patch.name,
                                        at=ctx.now) if failed else None,
                ),
                again=True,
            )
        if result.reason and result.transient and not _expired(ctx, entry.rollback_started_at):
            return _retry(ctx, index=index, result=result)
        if result.reason:
            return _fail(ctx, index=index, reason=reasons.ROLLBACK_FAILED,
                         message=f"could not revert the patch's commit: {result.message}")
        ctx.entries[index] = entry = replace(
            entry, git_revert=result.sha,
            message=f"{entry.message}; reverted by {result.sha[:12]} on {_reverted_on(ctx, entry)}",
        )
        ctx.message = f"rolling back {describe(entry.target)}: waiting for the revert to apply"
        return ctx.finish(again=True)
    if _expired(ctx, entry.rollback_started_at):
        return _fail(
            ctx, index=index, reason=reasons.ROLLBACK_FAILED,
            message=f"revert {entry.git_revert[:12]} on {_reverted_on(ctx, entry)} was not applied "
            f"within {_timeout(ctx)}: the workload still runs {entry.target_image}",
        )
    ctx.message = (f"rolling back {describe(entry.target)}: waiting for the GitOps tool to "
                   f"apply revert {entry.git_revert[:12]}")
    return ctx.finish(requeue_after=GATE_POLL)


def _live_image(workload: Workload, entry: RolloutEntry) -> str:
    container = container_of(workload.deployment or {}, entry.target.container) or {}
    return str(container.get("image", ""))
