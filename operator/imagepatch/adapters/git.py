"""Git write-back: clone, commit, push and revert through the ``git`` binary.

Why the git binary (in the operator image) and not dulwich (pure Python) or
pygit2 (libgit2): rebase, revert, SSH transport with a known_hosts file and
SSH commit signing (``gpg.format=ssh``) are all native to git, and behave
exactly as they do for the people who run ``git`` on the same repository;
dulwich has no rebase and no SSH signing, pygit2 needs libssh2 built in for
SSH and has neither rebase nor revert as one call. The cost, a subprocess
per operation, is small next to the network round trips.

Every call has a timeout (``timeout``, 60 s by default) and runs with no
user or system configuration and no prompt. Credentials never appear in a
URL, an argument or a log line: HTTP(S) ones are handed to git through
``GIT_ASKPASS`` (a script that prints two environment variables, set only in
the child's environment); SSH ones are files (mode 0600) in the work
directory, used with ``StrictHostKeyChecking=yes`` and the Secret's
``known_hosts``.

Each repository has one work directory under ``cache_dir`` (a hash of its
URL), a shallow clone (``DEPTH`` commits) refreshed before every operation,
and a lock: two patches of one repository take turns. A commit is made only
after the branch was searched for one carrying the patch's trailer
(restart-safe: a commit pushed before a crash is found, not made again; one
buried deeper than ``DEPTH`` commits is not found, but then the files already
hold the new reference, so nothing is committed twice). A revert needs the
commit itself: when it is older than the fetched history, the clone is
deepened (``git fetch --deepen``), ``DEPTH`` at a time up to ``MAX_DEPTH``. A
push is never forced: a non-fast-forward rejection fetches, rebases and
pushes again, at most ``PUSH_ATTEMPTS`` times; a rebase that conflicts is
dropped and the edit is made again on the new branch head.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from imagepatch.adapters.errors import ConfigurationError, TransientError

log = logging.getLogger("imagepatch.git")

__all__ = [
    "Credentials",
    "GitRepository",
    "Pushed",
]

DEPTH = 200  # commits fetched: how far back a patch's commit is looked for
# A revert whose commit is older than the fetched history deepens it, DEPTH
# commits at a time, up to this many in all (then the revert fails, saying so).
MAX_DEPTH = 2000
PUSH_ATTEMPTS = 3
FETCH_ATTEMPTS = 3
WORK_BRANCH = "imagepatch-work"

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()

_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$IMAGEPATCH_GIT_USERNAME" ;;
  *) printf '%s\\n' "$IMAGEPATCH_GIT_PASSWORD" ;;
esac
"""


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """What the policy's Secret holds (HTTP(S): username/password or token; SSH: a key)."""

    username: str = ""
    password: str = ""
    identity: str = ""  # an SSH private key
    known_hosts: str = ""
    signing_key: str = ""  # an SSH private key that signs commits

    @classmethod
    def from_secret(
        cls, data: Mapping[str, str], *, signing: Mapping[str, str] | None = None
    ) -> Credentials:
        """From a Secret's decoded data (``token`` stands for a password)."""
        token = data.get("token", "")
        return cls(
            username=data.get("username", "") or ("x-access-token" if token else ""),
            password=data.get("password", "") or token,
            identity=data.get("identity", ""),
            known_hosts=data.get("known_hosts", ""),
            signing_key=(signing or {}).get("identity", ""),
        )

    def __repr__(self) -> str:  # never print the material
        return "Credentials(<redacted>)"


@dataclass(frozen=True, kw_only=True)
class Pushed:
    """A commit on ``branch``: ``created`` False when it was found there (by its trailer)."""

    sha: str
    branch: str
    created: bool
    changes: tuple[str, ...] = ()


class _Rejected(Exception):
    """The push was not a fast-forward."""


class GitRepository:
    """One remote repository's branch, through a cached shallow clone.

    ``url`` carries no credentials; ``cache_dir`` holds the work directories.
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials,
        cache_dir: Path,
        author: tuple[str, str] = ("imagepatch", "imagepatch@users.noreply.imagepatch.dev"),
        timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.author = author
        self.timeout = timeout
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.root = cache_dir / key
        self.work = self.root / "repo"
        self.secrets = self.root / "secrets"
        with _LOCKS_GUARD:
            self.lock = _LOCKS.setdefault(str(self.root), threading.Lock())

    # --- plumbing ---------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": self.author[0],
            "GIT_AUTHOR_EMAIL": self.author[1],
            "GIT_COMMITTER_NAME": self.author[0],
            "GIT_COMMITTER_EMAIL": self.author[1],
            "LC_ALL": "C",  # git's messages are matched below
        }
        c = self.credentials
        if c.password:
            env["GIT_ASKPASS"] = str(self.secrets / "askpass")
            env["IMAGEPATCH_GIT_USERNAME"] = c.username or "git"
            env["IMAGEPATCH_GIT_PASSWORD"] = c.password
        if c.identity:
            env["GIT_SSH_COMMAND"] = (
                f"ssh -i {self.secrets / 'identity'} -o IdentitiesOnly=yes -o BatchMode=yes"
                " -o StrictHostKeyChecking=yes"
                f" -o UserKnownHostsFile={self.secrets / 'known_hosts'}"
            )
        return env

    def _write_secrets(self) -> None:
        self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = {"askpass": (_ASKPASS, 0o700)}
        c = self.credentials
        if c.identity:
            files["identity"] = (c.identity.rstrip("\n") + "\n", 0o600)
            files["known_hosts"] = (c.known_hosts, 0o600)
        if c.signing_key:
            files["signing"] = (c.signing_key.rstrip("\n") + "\n", 0o600)
        for name, (text, mode) in files.items():
            path = self.secrets / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(path, mode)

    def _git(
        self, *args: str, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = ["git", "-c", "protocol.file.allow=never", "-c", "core.hooksPath=/dev/null"]
        if self.credentials.signing_key:
            argv += ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.secrets / 'signing'}",
                     "-c", "commit.gpgsign=true"]
        argv += list(args)
        try:
            done = subprocess.run(argv, cwd=cwd or self.work, env=self._env(), capture_output=True,
                                  text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise ConfigurationError("the git binary is not installed where the operator runs "
                                     "(Git write-back needs git and, for SSH, ssh)",
                                     reason="GitUnavailable") from None
        except subprocess.TimeoutExpired:
            raise TransientError(f"git {args[0]} on {self.url} timed out after {self.timeout:.0f}s",
                                 reason="GitTimeout") from None
        if check and done.returncode:
            raise self._error(args[0], done.stderr)
        return done

    def _error(self, verb: str, stderr: str) -> Exception:
        # git's own messages name the URL we gave it (no credentials in it) and refs.
        text = " ".join(stderr.strip().splitlines()[-3:])[:500]
        lowered = text.lower()
        if "authentication failed" in lowered or "could not read username" in lowered or (
            "permission denied" in lowered) or "host key verification failed" in lowered:
            return ConfigurationError(f"git {verb} {self.url}: access denied: {text}",
                                      reason="GitAuthFailed")
        if "couldn't find remote ref" in lowered:
            return ConfigurationError(f"git {verb} {self.url}: {text}", reason="GitBranchNotFound")
        return TransientError(f"git {verb} {self.url} failed: {text}", reason="GitFailed")

    def _fetch(self, *branches: str) -> dict[str, str]:
        """Fetch ``branches`` (shallow) into refs/remotes/origin/; the heads that exist."""
        heads = self._git("ls-remote", "--heads", self.url, *[f"refs/heads/{b}" for b in branches])
        found = {}
        for line in heads.stdout.splitlines():
            sha, _, ref = line.partition("\t")
            found[ref.removeprefix("refs/heads/")] = sha
        refspecs = [f"+refs/heads/{b}:refs/remotes/origin/{b}" for b in branches if b in found]
        if refspecs:
            for attempt in range(FETCH_ATTEMPTS):
                done = self._git("fetch", "--quiet", f"--depth={DEPTH}", self.url, *refspecs,
                                 check=False)
                if not done.returncode:
                    break
                if attempt == FETCH_ATTEMPTS - 1:
                    raise self._error("fetch", done.stderr)
                time.sleep(1.0 * (attempt + 1))
        return found

    def _prepare(self) -> None:
        self._write_secrets()
        if not (self.work / ".git").is_dir():
            shutil.rmtree(self.work, ignore_errors=True)
            self.work.mkdir(parents=True)
            self._git("init", "--quiet", cwd=self.work)

    def _checkout(self, ref: str) -> None:
        self._git("checkout", "--quiet", "--force", "-B", WORK_BRANCH, ref)
        self._git("clean", "--quiet", "-fdx")

    def _find(self, ref: str, match: Callable[[str], bool]) -> str:
        """The newest commit in ``ref``'s fetched history whose message ``match``es, or ""."""
        done = self._git("log", f"-n{DEPTH}", "--format=%H%x1f%B%x1e", ref)
        for record in done.stdout.split("\x1e"):
            sha, sep, message = record.strip().partition("\x1f")
            if sep and match(message):
                return sha
        return ""

    def _deepen(self, branch: str, commit: str) -> None:
        """Fetch more of ``branch``'s history until ``commit`` and its parent are here, at
        most ``MAX_DEPTH`` commits in all; a commit still missing is left to revert's
        own error."""
        depth = DEPTH
        while commit and depth < MAX_DEPTH and not self._has(f"{commit}^"):
            if self._git("rev-parse", "--is-shallow-repository").stdout.strip() != "true":
                return
            log.info("%s: %s is not in the last %d commits of %s: fetching deeper", self.url,
                     commit[:12], depth, branch)
            self._git("fetch", "--quiet", f"--deepen={DEPTH}", self.url,
                      f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
            depth += DEPTH

    def _has(self, rev: str) -> bool:
        return not self._git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}",
                             check=False).returncode

    def _push(self, branch: str) -> None:
        done = self._git("push", "--porcelain", self.url, f"HEAD:refs/heads/{branch}", check=False)
        if not done.returncode:
            return
        out = done.stdout + done.stderr
        if "[rejected]" in out or "non-fast-forward" in out or "fetch first" in out or (
            "[remote rejected]" in out and "failed to update ref" in out) or "stale info" in out:
            raise _Rejected(out)
        if "[remote rejected]" in out:
            # A server-side hook said no (protected branch, a pre-receive check).
            raise _Rejected(out)
        raise self._error("push", done.stderr)

    # --- operations -------------------------------------------------------------------

    def commit(
        self,
        *,
        branch: str,
        push_branch: str = "",
        message: str,
        found: Callable[[str], bool],
        change: Callable[[Path], tuple[dict[str, str], tuple[str, ...]]],
    ) -> Pushed:
        """Find the commit ``found`` recognises on the branch, or make and push it.

        ``change(worktree)`` returns the files to write (repository-relative
        path -> text) and a description of each change; it runs again on the
        new head after a rejected push whose rebase conflicted. When ``change``
        has nothing to write (the files already say it), the branch head
        (``created`` False); an error it raises propagates.
        """
        target = push_branch or branch
        with self.lock:
            self._prepare()
            for attempt in range(PUSH_ATTEMPTS):
                heads = self._fetch(branch, *([push_branch] if push_branch else []))
                if branch not in heads:
                    raise ConfigurationError(f"{self.url} has no branch {branch!r}",
                                             reason="GitBranchNotFound")
                # On the branch (merged) or on the push branch (a pull request's).
                for ref in dict.fromkeys(f"origin/{b}" for b in (branch, target) if b in heads):
                    if sha := self._find(ref, found):
                        return Pushed(sha=sha, branch=target, created=False)
                base = f"origin/{target}" if target in heads else f"origin/{branch}"
                self._checkout(base)
                files, changes = change(self.work)
                if not files:
                    head = self._git("rev-parse", "HEAD").stdout.strip()
                    return Pushed(sha=head, branch=target, created=False)
                for rel, text in files.items():
                    # An Argo CD override file may be the first in its folder.
                    (self.work / rel).parent.mkdir(parents=True, exist_ok=True)
                    (self.work / rel).write_text(text)
                self._git("add", "--", *files)
                self._git("commit", "--quiet", "-m", message)
                for _ in range(PUSH_ATTEMPTS):
                    try:
                        self._push(target)
                        sha = self._git("rev-parse", "HEAD").stdout.strip()
                        log.info("pushed %s to %s %s", sha, self.url, target)
                        return Pushed(sha=sha, branch=target, created=True, changes=changes)
                    except _Rejected:
                        log.info("push to %s %s rejected (not a fast-forward): rebasing",
                                 self.url, target)
                    self._fetch(target)
                    if sha := self._find(f"origin/{target}", found):
                        return Pushed(sha=sha, branch=target, created=False)
                    if self._git("rebase", "--quiet", f"origin/{target}", check=False).returncode:
                        self._git("rebase", "--abort", check=False)
                        break  # make the edit again on the new head
                log.info("push to %s %s: attempt %d of %d failed", self.url, target, attempt + 1,
                         PUSH_ATTEMPTS)
        raise TransientError(
            f"could not push to {self.url} branch {target}: rejected {PUSH_ATTEMPTS} times "
            "(others keep committing, or a hook refuses it); never force-pushed",
            reason="GitPushRejected")

    def revert(
        self,
        *,
        branch: str,
        commit: str,
        original: Callable[[str], bool],
        message: str,
        found: Callable[[str], bool],
    ) -> Pushed:
        """A commit on ``branch`` reverting the patch's commit (found by ``original``, else
        ``commit``: after a squash merge, the squash), or the revert already there
        (``found``). A merge commit is reverted against its first parent; a commit older
        than the fetched history deepens it (``_deepen``). Never force-pushed."""
        with self.lock:
            self._prepare()
            for _ in range(PUSH_ATTEMPTS):
                heads = self._fetch(branch)
                if branch not in heads:
                    raise ConfigurationError(f"{self.url} has no branch {branch!r}",
                                             reason="GitBranchNotFound")
                ref = f"origin/{branch}"
                if sha := self._find(ref, found):
                    return Pushed(sha=sha, branch=branch, created=False)
                undo = self._find(ref, original) or commit
                self._deepen(branch, undo)
                if not self._has(undo):
                    raise ConfigurationError(
                        f"cannot revert {undo[:12]} on {self.url} branch {branch}: it is not in "
                        f"the last {MAX_DEPTH} commits of {branch} (revert it by hand)",
                        reason="GitRevertFailed")
                self._checkout(ref)
                # A merge commit (a request merged with one) is undone against its
                # first parent, the branch as it was before the merge.
                parents = self._git("rev-list", "--parents", "-n1", undo, check=False)
                mainline = ["-m", "1"] if len(parents.stdout.split()) > 2 else []
                done = self._git("revert", "--no-edit", "--no-commit", *mainline, undo,
                                 check=False)
                if done.returncode:
                    self._git("revert", "--abort", check=False)
                    raise ConfigurationError(
                        f"cannot revert {undo[:12]} on {self.url} branch {branch}: "
                        + " ".join(done.stderr.strip().splitlines()[-2:])[:300],
                        reason="GitRevertFailed")
                self._git("commit", "--quiet", "--allow-empty", "-m", message)
                try:
                    self._push(branch)
                except _Rejected:
                    continue  # the loop fetches the new head and reverts there
                sha = self._git("rev-parse", "HEAD").stdout.strip()
                return Pushed(sha=sha, branch=branch, created=True)
        raise TransientError(f"could not push the revert to {self.url} branch {branch}: "
                             f"rejected {PUSH_ATTEMPTS} times; never force-pushed",
                             reason="GitPushRejected")
