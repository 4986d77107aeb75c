"""Carry out a write-back step (``core.rollout.GitWrite``): commit or revert, and say how it went.

The planner asks for a commit (or a revert) after recording its intent; this
module reads the policy's Secrets from the operator's namespace, edits the
files under ``gitWriteBack.path`` with ``core.writeback.edit``, and lets
``adapters.git`` find the commit by its trailer or push a new one; with
``pullRequest`` it then has ``adapters.forge`` open (or find open) the request
from ``pushBranch``, with the token Secret's ``token``, and later asks the
forge what became of it (open, merged by which commit, closed). A revert
after a merged request undoes the commit that carries the patch's trailer on
``branch``, else the merge's own commit (a squash drops the trailer), asked
of the forge when it was not recorded. ``argoCD`` on a workload Flux
delivers is refused (``ArgoCDSettingsOnFluxWorkload``): the override file
would be one Flux never reads. What happened goes back to the planner as a
``GitResult``, which records it: this module writes no status itself (one
writer per status).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from imagepatch.adapters import forge
from imagepatch.adapters.errors import AdapterError, ConfigurationError, TransientError
from imagepatch.adapters.git import Credentials, GitRepository, Pushed
from imagepatch.adapters.kube import Kube
from imagepatch.core import gitops, reasons, writeback
from imagepatch.core.images import parse_image
from imagepatch.core.rollout.context import GitResult, GitWrite
from imagepatch.model.imagepatch import ImagePatch
from imagepatch.model.policy import GitWriteBack, PolicySpec, RolloutMode
from imagepatch.model.policy import PullRequest as PullRequestSettings

log = logging.getLogger("imagepatch.writeback")

# adapters.forge.open_pull_request's and pull_request_state's shapes (unit tests
# hand in their own).
OpenPullRequest = Callable[..., Awaitable[forge.PullRequest]]
PullRequestStateOf = Callable[..., Awaitable[forge.PullRequestState]]

# Files under gitWriteBack.path that are read (YAML manifests, kustomizations,
# Helm values, Argo CD's parameter files); at most this many, of at most this size.
_SUFFIXES = (".yaml", ".yml")
MAX_FILES = 2000
MAX_FILE_BYTES = 1 << 20


class GitWriter:
    """Write-back with the policy's Secrets (operator namespace) and a cached clone per repo."""

    def __init__(self, kube: Kube, operator_namespace: str, cache_dir: Path | None = None,
                 *, open_pull_request: OpenPullRequest = forge.open_pull_request,
                 pull_request_state: PullRequestStateOf = forge.pull_request_state) -> None:
        self.kube = kube
        self.namespace = operator_namespace
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "imagepatch-git"
        self.open_pull_request = open_pull_request
        self.pull_request_state = pull_request_state

    async def _secret(self, name: str, *, field: str = "spec.rollout.gitWriteBack",
                      keys: str = "username and password (or token) for an HTTP(S) URL, "
                      "identity and known_hosts for SSH",
                      reason: str = reasons.GIT_WRITE_BACK_FAILED) -> dict[str, str]:
        body = await self.kube.get_secret(self.namespace, name)
        if body is None:
            raise ConfigurationError(
                f"Secret {self.namespace}/{name} ({field}) not found: create it with {keys}",
                reason=reason)
        data: Mapping[str, Any] = body.get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items() if isinstance(v, str)}

    async def _token(self, pr: PullRequestSettings) -> str:
        field = "spec.rollout.gitWriteBack.pullRequest.tokenSecretRef"
        token = (await self._secret(pr.token_secret, field=field, keys="the key token",
                                    reason=reasons.GIT_FORGE_AUTH_FAILED)).get("token", "")
        if not token:
            raise ConfigurationError(
                f"Secret {self.namespace}/{pr.token_secret} ({field}) has no key token",
                reason=reasons.GIT_FORGE_AUTH_FAILED)
        return token

    async def _state(self, wb: GitWriteBack, number: int) -> forge.PullRequestState:
        """What the forge says of request ``number`` (an ``AdapterError`` when it cannot)."""
        pr = wb.pull_request
        if pr is None:
            raise ConfigurationError("the policy no longer sets "
                                     "spec.rollout.gitWriteBack.pullRequest",
                                     reason=reasons.GIT_FORGE_REJECTED)
        return await self.pull_request_state(
            str(pr.provider), repository_url=wb.url, token=await self._token(pr),
            number=number, api_url=pr.api_url)

    async def _poll(self, act: GitWrite, policy: PolicySpec | None, patch: ImagePatch
                    ) -> GitResult:
        """``act.poll_pull_request``: what became of the request, or why the forge did not say."""
        done = GitResult(target=act.target)
        try:
            state = await self._state(_settings(policy), act.pull_request_number)
        except AdapterError as exc:
            reason = exc.reason if exc.reason.startswith("GitForge") else (
                reasons.GIT_FORGE_REJECTED)
            return replace(done, pull_request_reason=reason, pull_request_message=str(exc))
        log.info("ImagePatch %s: pull request %d is %s", patch.name, act.pull_request_number,
                 state.state)
        return replace(done, pull_request_state=state.state, merge_commit=state.merge_commit,
                       merged_at=state.merged_at)

    async def _merge_commit(self, wb: GitWriteBack, act: GitWrite) -> str:
        """The commit a merged request put on ``branch``: recorded, else asked of the forge
        (best effort: without it the revert undoes the patch's own commit)."""
        if act.merge_commit or not act.pull_request_number or wb.pull_request is None:
            return act.merge_commit
        try:
            state = await self._state(wb, act.pull_request_number)
        except AdapterError as exc:
            log.warning("could not ask the forge for the merge commit of request %d: %s",
                        act.pull_request_number, exc)
            return ""
        return state.merge_commit if state.state == forge.MERGED else ""

    async def _pull_request(self, wb: GitWriteBack, act: GitWrite, patch: ImagePatch,
                            done: GitResult) -> GitResult:
        """``done`` with the request from ``pushBranch`` opened (or found open), or why not.

        The forge adapter lists the open requests first, so asking again (a
        restart before the URL was recorded) never opens a second one.
        """
        pr = wb.pull_request
        if pr is None or not wb.push_branch:
            return done
        try:
            token = await self._token(pr)
            title, _, body = _message(wb, act, patch).partition("\n")
            opened = await self.open_pull_request(
                str(pr.provider), repository_url=wb.url, token=token, head=wb.push_branch,
                base=wb.branch, title=title, body=body.strip(), api_url=pr.api_url)
        except AdapterError as exc:
            reason = exc.reason if exc.reason.startswith("GitForge") else (
                reasons.GIT_FORGE_REJECTED)
            return replace(done, pull_request_reason=reason, pull_request_message=str(exc))
        log.info("ImagePatch %s: pull request %s %s", patch.name, opened.url,
                 "opened" if opened.created else "was open")
        return replace(done, pull_request_url=opened.url, pull_request_number=opened.number)

    async def run(
        self, act: GitWrite, *, patch: ImagePatch, policy: PolicySpec | None,
        owner: gitops.Owner | None = None,
    ) -> GitResult:
        """Do ``act``; a failure is the result's ``reason`` and ``message``, never raised.

        ``owner``: the workload's GitOps owner (``core.gitops.owner_of``); an Argo
        CD Application's commit writes its override file when ``argoCD`` is set.
        """
        if act.pull_request:
            done = GitResult(target=act.target)
            try:
                wb = _settings(policy)
            except AdapterError as exc:
                return replace(done, pull_request_reason=reasons.GIT_FORGE_REJECTED,
                               pull_request_message=str(exc))
            return await self._pull_request(wb, act, patch, done)
        if act.poll_pull_request:
            return await self._poll(act, policy, patch)
        try:
            wb = _settings(policy)
            # A revert undoes what was written, whatever the policy says now.
            mismatch = writeback.argocd_on_flux(owner) if (
                wb.argo_cd is not None and not act.revert) else None
            if mismatch is not None:
                raise ConfigurationError(mismatch, reason=reasons.GIT_ARGOCD_ON_FLUX)
            creds = Credentials.from_secret(
                await self._secret(wb.secret_name),
                signing=await self._secret(wb.signing_key_secret) if wb.signing_key_secret
                else None)
            repo = GitRepository(wb.url, credentials=creds, cache_dir=self.cache_dir,
                                 author=(wb.author_name, wb.author_email))
            app = owner if (wb.argo_cd is not None and owner is not None
                            and owner.tool is gitops.Tool.ARGO_CD_APPLICATION) else None
            if act.revert:
                merge = await self._merge_commit(wb, act)
                pushed = await asyncio.to_thread(_revert, repo, wb, act, patch, merge)
            elif app is not None:
                pushed = await asyncio.to_thread(_commit_argocd, repo, wb, act, patch, app)
            else:
                pushed = await asyncio.to_thread(_commit, repo, wb, act, patch)
        except TransientError as exc:
            return GitResult(target=act.target, revert=act.revert, reason=exc.reason,
                             message=str(exc), transient=True)
        except AdapterError as exc:
            reason = exc.reason if exc.reason.startswith(("Git", "Flux", "ArgoCD")) else (
                reasons.GIT_WRITE_BACK_FAILED)
            return GitResult(target=act.target, revert=act.revert, reason=reason,
                             message=str(exc))
        log.info("ImagePatch %s: %s %s on %s", patch.name,
                 "made" if pushed.created else "found", pushed.sha, wb.describe())
        done = GitResult(target=act.target, revert=act.revert, sha=pushed.sha,
                         branch=pushed.branch)
        return done if act.revert else await self._pull_request(wb, act, patch, done)


def _settings(policy: PolicySpec | None) -> GitWriteBack:
    wb = policy.rollout.git_write_back if policy is not None else None
    if policy is None or wb is None or policy.rollout.mode is not RolloutMode.GIT_WRITE_BACK:
        raise ConfigurationError(
            "the policy no longer sets spec.rollout.mode: GitWriteBack with "
            "spec.rollout.gitWriteBack", reason=reasons.GIT_WRITE_BACK_FAILED)
    return wb


def _workload(act: GitWrite) -> str:
    """kind/namespace/name, as core.writeback's message templates name a workload."""
    t = act.target
    return f"{t.kind}/{t.namespace}/{t.name}"


def _files(root: Path, folder: str) -> list[Path]:
    base = (root / folder).resolve()
    if not base.is_relative_to(root.resolve()) or not base.is_dir():
        return []
    found = sorted(p for p in base.rglob("*") if p.suffix in _SUFFIXES and p.is_file()
                   and not p.is_symlink() and ".git" not in p.relative_to(root).parts)
    return [p for p in found[:MAX_FILES] if p.stat().st_size <= MAX_FILE_BYTES]


def _commit(repo: GitRepository, wb: GitWriteBack, act: GitWrite, patch: ImagePatch) -> Pushed:
    ref = parse_image(act.image)
    new = writeback.NewImage(repository=ref.name, tag=ref.tag or "", digest=ref.digest or "")
    target = writeback.Target(ref.name, patch.policy, wb.helm_values_key or None)

    def change(root: Path) -> tuple[dict[str, str], tuple[str, ...]]:
        files: dict[str, str] = {}
        changes: list[str] = []
        owned: list[str] = []
        declared = False
        for path in _files(root, wb.path):
            rel = path.relative_to(root).as_posix()
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # not a manifest imagepatch could edit without corrupting it
            result = writeback.edit(rel, text, target, new)
            owned += result.flux_owned
            if result.changed:
                files[rel] = result.text
                changes += result.changes
            declared = declared or result.declares
        if not files and owned:
            raise ConfigurationError(
                f"{', '.join(owned[:5])} in {wb.url} carry Flux's $imagepolicy marker: Flux "
                f"image automation owns {ref.name}, so imagepatch does not edit it (let Flux "
                "update it, or remove the marker)", reason=reasons.GIT_FLUX_IMAGE_AUTOMATION)
        if not files and not declared:
            raise ConfigurationError(
                f"no file under {wb.path!r} of {wb.describe()} declares {ref.name} (a "
                "kustomization's images: entry, a manifest's image:, a line with the "
                "# {\"$imagepatch\": ...} marker, or a Helm values file with helmValuesKey): add "
                "one, or fix spec.rollout.gitWriteBack.path", reason=reasons.GIT_IMAGE_NOT_DECLARED)
        return files, tuple(changes)

    message = _message(wb, act, patch)
    return repo.commit(branch=wb.branch, push_branch=wb.push_branch, message=message,
                       found=lambda m: writeback.patch_trailer(m) == patch.name, change=change)


def _commit_argocd(repo: GitRepository, wb: GitWriteBack, act: GitWrite, patch: ImagePatch,
                   app: gitops.Owner) -> Pushed:
    """The commit that pins the image in the Application's ``.argocd-source-<app>.yaml``.

    Argo CD applies that file over the Application's source, so it is the one
    file written (merged with what it holds: other images and parameters stay),
    not the manifests, which the override would shadow anyway.
    """
    argo = wb.argo_cd
    assert argo is not None
    ref = parse_image(act.image)
    new = writeback.NewImage(repository=ref.name, tag=ref.tag or "", digest=ref.digest or "")
    target = writeback.Target(ref.name, patch.policy, wb.helm_values_key or None)
    name = writeback.argocd_source_path(app.name, app.namespace, argo.namespace)
    rel = (PurePosixPath(wb.path) / name).as_posix()

    def change(root: Path) -> tuple[dict[str, str], tuple[str, ...]]:
        path = root / rel
        if not path.resolve().is_relative_to(root.resolve()):
            raise ConfigurationError(f"{rel} is outside the repository",
                                     reason=reasons.GIT_WRITE_BACK_FAILED)
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        try:
            text = writeback.edit_argocd_source(
                old, source_type=str(argo.source_type).lower(), target=target, new=new,
                helm_image_parameter=argo.helm_image_parameter,
                helm_tag_parameter=argo.helm_tag_parameter)
        except writeback.WriteBackError as exc:
            raise ConfigurationError(f"{rel} in {wb.url}: {exc}",
                                     reason=reasons.GIT_WRITE_BACK_FAILED) from None
        if text == old:
            return {}, ()
        return {rel: text}, (f"{rel}: {app.describe()} {ref.name} -> {new.reference()}",)

    return repo.commit(branch=wb.branch, push_branch=wb.push_branch,
                       message=_message(wb, act, patch),
                       found=lambda m: writeback.patch_trailer(m) == patch.name, change=change)


def _message(wb: GitWriteBack, act: GitWrite, patch: ImagePatch) -> str:
    """The patch's commit message (its first line and body also titled its pull request)."""
    try:
        return writeback.commit_message(
            wb.message_template or None, patch=patch.name, workload=_workload(act),
            old=act.previous, new=act.image, reason=patch.reason,
            findings=patch.evidence_findings or ())
    except writeback.WriteBackError as exc:  # the policy's status says so too (core.policy)
        raise ConfigurationError(f"spec.rollout.gitWriteBack.messageTemplate: {exc}",
                                 reason=reasons.GIT_WRITE_BACK_FAILED) from None


def _revert(repo: GitRepository, wb: GitWriteBack, act: GitWrite, patch: ImagePatch,
            merge_commit: str = "") -> Pushed:
    """The revert, pushed to ``branch`` itself (also after a pull request: a failing
    workload does not wait for a review; the revert restores what ran before). It
    undoes the commit on ``branch`` that carries the patch's trailer (a merge commit
    or a rebase keeps it), else ``merge_commit`` (a squash drops it), else the
    patch's own commit."""
    verdict = f" ({act.why})" if act.why else ""
    message = writeback.revert_message(
        f"imagepatch: {_workload(act)} to {act.previous}", patch=patch.name,
        reason=f"{act.previous} failed its health gate on {_workload(act)}{verdict}; imagepatch "
        f"rolls back to {act.image}")
    return repo.revert(branch=wb.branch, commit=merge_commit or act.commit,
                       original=lambda m: writeback.patch_trailer(m) == patch.name,
                       message=message, found=lambda m: writeback.revert_trailer(m) == patch.name)
