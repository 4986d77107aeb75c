"""Open a pull request (GitHub) or merge request (GitLab) for a pushed branch, never two;
and ask what became of it (open, merged by which commit, or closed).

Git write-back with ``pushBranch`` pushes the commit to its own branch; when
the policy configures ``pullRequest``, this adapter asks the forge to open a
request from that branch into the target branch. It first lists the open
requests from the branch and returns the one it finds (a restarted operator,
or a second patch to the same branch, never opens a duplicate); when another
writer wins the race between list and create, the forge answers that one
already exists (GitHub: 422 "A pull request already exists"; GitLab: 409
"Another open merge request already exists") and the adapter lists again
and returns it.

The REST calls, as the forges document them:

- GitHub (``docs.github.com/en/rest/pulls/pulls``): ``GET
  /repos/{owner}/{repo}/pulls?state=open&head={owner}:{branch}&base={base}``
  lists (an array of objects with ``number`` and ``html_url``); ``POST
  /repos/{owner}/{repo}/pulls`` with ``{title, head, base, body}`` creates
  (201, the same object). ``Authorization: Bearer <token>``, ``Accept:
  application/vnd.github+json``, ``X-GitHub-Api-Version: 2022-11-28``. The
  API is ``https://api.github.com``, or ``https://<host>/api/v3`` for GitHub
  Enterprise Server. ``GET /repos/{owner}/{repo}/pulls/{number}`` reads one
  (``state`` open/closed, ``merged``, ``merged_at``, ``merge_commit_sha``).
- GitLab (``docs.gitlab.com/api/merge_requests``): ``GET
  /projects/:id/merge_requests?state=opened&source_branch=…&target_branch=…``
  lists (objects with ``iid`` and ``web_url``); ``POST
  /projects/:id/merge_requests`` with ``{source_branch, target_branch, title,
  description}`` creates (201). ``:id`` is the URL-encoded project path.
  ``PRIVATE-TOKEN: <token>``; the API is ``https://<host>/api/v4``. ``GET
  /projects/:id/merge_requests/:iid`` reads one (``state``
  opened/closed/locked/merged, ``merged_at``, ``merge_commit_sha``,
  ``squash_commit_sha``).

Errors are classified here, once (``adapters/errors.py``): 401 and a 403 that
is not a rate limit are ``ConfigurationError`` (the token or its scope), 404
``NotFoundError`` (no such repository, or the token cannot see it), 422/409
other than "already exists" ``ConfigurationError`` with the forge's own
validation message (no commits between the branches, an unknown branch);
429, a rate-limited 403, 5xx, timeouts and connection errors are
``TransientError``, retried with jittered exponential back-off
(``adapters/retry.py``, stamina) within a cap on attempts and total time,
honouring ``Retry-After`` (and GitHub's ``X-RateLimit-Reset``). Messages name
the forge, the API host, the repository and the status, never the token; a
response body is quoted only from a validation answer (422/409), never from
an authentication failure.
"""

from __future__ import annotations

import abc
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from imagepatch.adapters.errors import (
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from imagepatch.adapters.retry import RetrySettings, retrying
from imagepatch.core import reasons

__all__ = [
    "Forge",
    "GitHub",
    "GitLab",
    "PullRequest",
    "PullRequestState",
    "RetrySettings",
    "forge_for",
    "open_pull_request",
    "pull_request_state",
]

GITHUB_API = "https://api.github.com"
OPEN, MERGED, CLOSED = "open", "merged", "closed"  # PullRequestState.state
GITHUB_API_VERSION = "2022-11-28"
TIMEOUT = httpx.Timeout(10.0)
_MESSAGE_MAX = 300


@dataclass(frozen=True, kw_only=True, slots=True)
class PullRequest:
    """An open pull (merge) request: its number (GitLab's ``iid``), its web page, and
    whether this call opened it (False: it was open already)."""

    number: int
    url: str
    created: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class PullRequestState:
    """What became of a request: ``open``, ``merged`` or ``closed`` (without a merge);
    once merged, the commit the merge put on the target branch (the merge commit, the
    squash commit, or the last commit rebased onto it: what a revert undoes) and when."""

    state: str
    url: str = ""
    merge_commit: str = ""
    merged_at: str = ""


class Forge(abc.ABC):
    """One repository on a forge, one token: open a request, and ask what became of it."""

    name = "forge"

    def __init__(self, *, api_url: str, token: str, client: httpx.AsyncClient | None = None,
                 retry: RetrySettings | None = None) -> None:
        if not token:
            raise ConfigurationError(f"{self.name}: the pull request token is empty",
                                     reason=reasons.GIT_FORGE_AUTH_FAILED)
        self.api_url = api_url.rstrip("/")
        self.host = urllib.parse.urlsplit(self.api_url).netloc
        self._token = token
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(timeout=TIMEOUT)
        self.retry = retry or RetrySettings()

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()

    async def __aenter__(self) -> Forge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- what each forge says differently ----------------------------------------------

    @abc.abstractmethod
    def _headers(self) -> dict[str, str]:
        """The authentication and API-version headers."""

    @property
    @abc.abstractmethod
    def repository(self) -> str:
        """The repository as the forge names it, for messages."""

    @abc.abstractmethod
    async def _find(self, *, head: str, base: str) -> PullRequest | None:
        """The open request from ``head`` into ``base``, if any."""

    @abc.abstractmethod
    async def _create(self, *, head: str, base: str, title: str, body: str
                      ) -> PullRequest | None:
        """The new request, or None when the forge says one is open already."""

    @abc.abstractmethod
    async def pull_request_state(self, number: int) -> PullRequestState:
        """Whether request ``number`` is open, merged (and by which commit) or closed."""

    # -- the verb ----------------------------------------------------------------------

    async def open_pull_request(self, *, head: str, base: str, title: str, body: str
                                ) -> PullRequest:
        """The open request from branch ``head`` into ``base``: found, or opened."""
        found = await self._find(head=head, base=base)
        if found is not None:
            return found
        created = await self._create(head=head, base=base, title=title, body=body)
        if created is not None:
            return created
        found = await self._find(head=head, base=base)  # lost the race to another writer
        if found is None:
            raise ConfigurationError(
                f"{self.name} at {self.host} says a request from {head!r} into {base!r} of "
                f"{self.repository} exists, but lists none open: is it open from a fork?",
                reason=reasons.GIT_FORGE_REJECTED)
        return found

    # -- HTTP --------------------------------------------------------------------------

    async def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                    json: Mapping[str, Any] | None = None, exists: re.Pattern[str] | None = None
                    ) -> Any:
        """The decoded JSON answer; None when ``exists`` matches a 409/422 message."""
        return await retrying(self.retry, lambda: self._once(
            method, path, params=params, json=json, exists=exists))

    async def _once(self, method: str, path: str, *, params: Mapping[str, str] | None,
                    json: Mapping[str, Any] | None, exists: re.Pattern[str] | None) -> Any:
        what = f"{self.name} at {self.host} ({method} {self.repository})"
        try:
            response = await self.client.request(
                method, self.api_url + path, params=params, json=json, headers=self._headers())
        except httpx.TimeoutException:
            raise TransientError(f"{what}: timed out",
                                 reason=reasons.GIT_FORGE_UNAVAILABLE) from None
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: {type(exc).__name__}",
                                 reason=reasons.GIT_FORGE_UNAVAILABLE) from None
        status = response.status_code
        if status in (409, 422):
            problem = _problem(response)
            if exists is not None and exists.search(problem):
                return None
            raise ConfigurationError(f"{what}: {status}: {problem}",
                                     reason=reasons.GIT_FORGE_REJECTED)
        if status == 401:
            raise ConfigurationError(
                f"{what}: 401: the token was not accepted; check the pullRequest token Secret",
                reason=reasons.GIT_FORGE_AUTH_FAILED)
        wait = _retry_after(response)
        if status == 429 or (status == 403 and (
                wait is not None or response.headers.get("x-ratelimit-remaining") == "0")):
            raise TransientError(f"{what}: {status}: rate limited",
                                 reason=reasons.GIT_FORGE_UNAVAILABLE, retry_after=wait)
        if status == 403:
            raise ConfigurationError(
                f"{what}: 403: the token may not open pull requests here (GitHub: "
                "pull_requests write; GitLab: api scope, Developer role)",
                reason=reasons.GIT_FORGE_ACCESS_DENIED)
        if status == 404:
            raise NotFoundError(
                f"{what}: 404: no such repository, or the token cannot see it",
                reason=reasons.GIT_FORGE_NOT_FOUND)
        if status >= 500:
            raise TransientError(f"{what}: {status}", reason=reasons.GIT_FORGE_UNAVAILABLE,
                                 retry_after=wait)
        if status >= 300:
            raise ConfigurationError(f"{what}: {status}", reason=reasons.GIT_FORGE_REJECTED)
        try:
            return response.json()
        except ValueError:
            raise ConfigurationError(
                f"{what}: {status} but not JSON: is apiURL the forge's REST API?",
                reason=reasons.GIT_FORGE_REJECTED) from None


class GitHub(Forge):
    """A GitHub (or GitHub Enterprise Server) repository ``owner/name``."""

    name = "GitHub"
    _EXISTS = re.compile(r"already exists", re.IGNORECASE)

    def __init__(self, *, owner: str, repo: str, token: str, api_url: str = GITHUB_API,
                 client: httpx.AsyncClient | None = None,
                 retry: RetrySettings | None = None) -> None:
        super().__init__(api_url=api_url or GITHUB_API, token=token, client=client, retry=retry)
        self.owner, self.repo = owner, repo

    @property
    def repository(self) -> str:
        return f"{self.owner}/{self.repo}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": GITHUB_API_VERSION}

    def _path(self) -> str:
        return f"/repos/{_segment(self.owner)}/{_segment(self.repo)}/pulls"

    async def _find(self, *, head: str, base: str) -> PullRequest | None:
        found = await self._call("GET", self._path(), params={
            "state": "open", "head": f"{self.owner}:{head}", "base": base})
        return next((_github(item, created=False) for item in _items(found, self)), None)

    async def _create(self, *, head: str, base: str, title: str, body: str
                      ) -> PullRequest | None:
        made = await self._call("POST", self._path(), json={
            "title": title, "head": head, "base": base, "body": body}, exists=self._EXISTS)
        return None if made is None else _github(made, created=True)

    async def pull_request_state(self, number: int) -> PullRequestState:
        """``GET /repos/{owner}/{repo}/pulls/{number}``: ``state`` is ``open`` or
        ``closed``, ``merged`` says which kind of closed; once merged,
        ``merge_commit_sha`` is the merge commit, the squash commit, or the last
        commit rebased onto the base, as the merge method made it."""
        item = await self._call("GET", f"{self._path()}/{int(number)}")
        _check(item, self, "number")
        url = str(item.get("html_url") or "")
        if item.get("merged") is True or item.get("merged_at"):
            return PullRequestState(state=MERGED, url=url,
                                    merge_commit=str(item.get("merge_commit_sha") or ""),
                                    merged_at=str(item.get("merged_at") or ""))
        return PullRequestState(state=CLOSED if item.get("state") == "closed" else OPEN, url=url)


class GitLab(Forge):
    """A GitLab project, by its path (``group/subgroup/name``) or numeric id."""

    name = "GitLab"
    _EXISTS = re.compile(r"already exists", re.IGNORECASE)

    def __init__(self, *, project: str, token: str, api_url: str,
                 client: httpx.AsyncClient | None = None,
                 retry: RetrySettings | None = None) -> None:
        super().__init__(api_url=api_url, token=token, client=client, retry=retry)
        self.project = project

    @property
    def repository(self) -> str:
        return self.project

    def _headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self._token}

    def _path(self) -> str:
        return f"/projects/{_segment(self.project)}/merge_requests"

    async def _find(self, *, head: str, base: str) -> PullRequest | None:
        found = await self._call("GET", self._path(), params={
            "state": "opened", "source_branch": head, "target_branch": base})
        return next((_gitlab(item, created=False) for item in _items(found, self)), None)

    async def _create(self, *, head: str, base: str, title: str, body: str
                      ) -> PullRequest | None:
        made = await self._call("POST", self._path(), json={
            "source_branch": head, "target_branch": base, "title": title,
            "description": body}, exists=self._EXISTS)
        return None if made is None else _gitlab(made, created=True)

    async def pull_request_state(self, number: int) -> PullRequestState:
        """``GET /projects/:id/merge_requests/:iid``: ``state`` is ``opened``,
        ``closed``, ``locked`` (a merge in progress: still open here) or ``merged``;
        once merged, ``squash_commit_sha`` (a squash merge: the commit that carries
        the change, even when a merge commit follows it) or ``merge_commit_sha`` (a
        merge commit; null for a fast-forward, whose commits keep their trailers)."""
        item = await self._call("GET", f"{self._path()}/{int(number)}")
        _check(item, self, "iid")
        url = str(item.get("web_url") or "")
        state = item.get("state")
        if state == "merged":
            commit = item.get("squash_commit_sha") or item.get("merge_commit_sha") or ""
            return PullRequestState(state=MERGED, url=url, merge_commit=str(commit),
                                    merged_at=str(item.get("merged_at") or ""))
        return PullRequestState(state=CLOSED if state == "closed" else OPEN, url=url)


# -- building a forge from the policy ---------------------------------------------------

_SCP_LIKE = re.compile(r"(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)")


def _split_repository_url(url: str) -> tuple[str, str, str]:
    """(scheme for the API, host[:port], repository path) of a Git remote URL:
    ``https://host/a/b(.git)``, ``ssh://git@host[:port]/a/b.git`` or ``git@host:a/b.git``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and parts.netloc:
        host = parts.netloc.rpartition("@")[2]  # never keep user info
        if parts.scheme == "ssh":
            host = host.partition(":")[0]  # an SSH port is not the API's
        scheme = "http" if parts.scheme == "http" else "https"
        path = parts.path
    else:
        match = _SCP_LIKE.fullmatch(url)
        if match is None:
            raise ConfigurationError(f"cannot tell the repository from Git URL {url!r}",
                                     reason=reasons.GIT_FORGE_REJECTED)
        scheme, host, path = "https", match["host"], match["path"]
    path = path.strip("/").removesuffix(".git")
    if not host or "/" not in path:
        raise ConfigurationError(f"cannot tell the repository from Git URL {url!r}",
                                 reason=reasons.GIT_FORGE_REJECTED)
    return scheme, host, path


def forge_for(provider: str, *, repository_url: str, token: str, api_url: str = "",
              client: httpx.AsyncClient | None = None,
              retry: RetrySettings | None = None) -> Forge:
    """The forge of ``repository_url`` (the policy's ``gitWriteBack.url``): ``provider``
    is ``GitHub`` or ``GitLab``; ``api_url`` empty means the host's own API
    (``api.github.com`` for github.com, ``/api/v3`` on GitHub Enterprise,
    ``/api/v4`` on GitLab)."""
    scheme, host, path = _split_repository_url(repository_url)
    kind = str(provider).lower()
    if kind == "github":
        owner, _, repo = path.rpartition("/")
        if not api_url:
            api_url = GITHUB_API if host == "github.com" else f"{scheme}://{host}/api/v3"
        return GitHub(owner=owner, repo=repo, token=token, api_url=api_url, client=client,
                      retry=retry)
    if kind == "gitlab":
        if not api_url:
            api_url = f"{scheme}://{host}/api/v4"
        else:  # GitLab under a relative URL: the repository path starts with it
            prefix = urllib.parse.urlsplit(api_url).path.strip("/").removesuffix("api/v4")
            path = path.removeprefix(prefix.rstrip("/") + "/") if prefix else path
        return GitLab(project=path, token=token, api_url=api_url, client=client, retry=retry)
    raise ConfigurationError(f"pull request provider {provider!r} is not GitHub or GitLab",
                             reason=reasons.GIT_FORGE_REJECTED)


async def open_pull_request(provider: str, *, repository_url: str, token: str, head: str,
                            base: str, title: str, body: str, api_url: str = "",
                            client: httpx.AsyncClient | None = None,
                            retry: RetrySettings | None = None) -> PullRequest:
    """Open (or find open) the request from ``head`` into ``base`` of ``repository_url``."""
    async with forge_for(provider, repository_url=repository_url, token=token,
                         api_url=api_url, client=client, retry=retry) as forge:
        return await forge.open_pull_request(head=head, base=base, title=title, body=body)


async def pull_request_state(provider: str, *, repository_url: str, token: str, number: int,
                             api_url: str = "", client: httpx.AsyncClient | None = None,
                             retry: RetrySettings | None = None) -> PullRequestState:
    """What became of request ``number`` of ``repository_url``."""
    async with forge_for(provider, repository_url=repository_url, token=token,
                         api_url=api_url, client=client, retry=retry) as forge:
        return await forge.pull_request_state(number)


# -- helpers ----------------------------------------------------------------------------


def _check(item: Any, forge: Forge, number: str) -> None:
    if not isinstance(item, Mapping) or not isinstance(item.get(number), int):
        raise ConfigurationError(
            f"{forge.name} at {forge.host}: a request of {forge.repository} came back without"
            f" {number!r}: is apiURL the forge's REST API?", reason=reasons.GIT_FORGE_REJECTED)


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _items(found: Any, forge: Forge) -> list[Mapping[str, Any]]:
    if not isinstance(found, list):
        raise ConfigurationError(
            f"{forge.name} at {forge.host}: listing requests of {forge.repository} did not"
            " answer a list: is apiURL the forge's REST API?", reason=reasons.GIT_FORGE_REJECTED)
    return [item for item in found if isinstance(item, Mapping)]


def _github(item: Any, *, created: bool) -> PullRequest:
    return _request(item, "number", "html_url", created=created)


def _gitlab(item: Any, *, created: bool) -> PullRequest:
    return _request(item, "iid", "web_url", created=created)


def _request(item: Any, number: str, url: str, *, created: bool) -> PullRequest:
    if not isinstance(item, Mapping) or not isinstance(item.get(number), int):
        raise ConfigurationError(f"the forge answered a request without {number!r}",
                                 reason=reasons.GIT_FORGE_REJECTED)
    return PullRequest(number=item[number], url=str(item.get(url) or ""), created=created)


def _problem(response: httpx.Response) -> str:
    """The forge's validation message (GitHub: ``message`` and ``errors[].message``;
    GitLab: ``message`` as a string or a list), one line, bounded."""
    try:
        data = response.json()
    except ValueError:
        return "(no message)"
    parts: list[str] = []
    if isinstance(data, Mapping):
        for value in (data.get("message"), data.get("error")):
            if isinstance(value, str):
                parts.append(value)
            elif isinstance(value, list):
                parts.extend(str(v) for v in value)
            elif isinstance(value, Mapping):
                parts.extend(f"{k} {v}" for k, v in value.items())
        for error in data.get("errors") or ():
            if isinstance(error, Mapping) and isinstance(error.get("message"), str):
                parts.append(error["message"])
    text = " ".join("; ".join(parts).split())
    return text[:_MESSAGE_MAX] or "(no message)"


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait: ``Retry-After`` (seconds), else GitHub's ``X-RateLimit-Reset``
    (epoch seconds) when the limit is spent."""
    value = response.headers.get("retry-after", "")
    if value.strip().isdigit():
        return float(value)
    reset = response.headers.get("x-ratelimit-reset", "")
    if response.headers.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return max(0.0, float(reset) - time.time())
    return None
