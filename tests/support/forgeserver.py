"""A stand-in for GitHub's and GitLab's REST APIs: the few pull (merge) request endpoints used.

GitHub and GitLab are third-party SaaS that cannot run in the sandbox; this
small HTTP server answers the calls ``adapters/forge.py`` makes, with the
request and response shapes the forges document, over the repositories of the
tests' real Git server (``tests/support/gitserver.py``). It is not a model of
either forge: no reviews, no permissions beyond one token, no mergeability.

GitHub REST "Pulls" (docs.github.com/en/rest/pulls/pulls), under ``/api/v3``
(GitHub Enterprise Server's prefix), ``Authorization: Bearer <token>``:

- ``GET /repos/{owner}/{repo}/pulls?state=&head=owner:branch&base=&per_page=&page=``:
  an array, paginated (``per_page`` default 30, max 100) with a ``Link``
  header (``rel="next"``, ``rel="last"``) as GitHub sends it;
- ``POST /repos/{owner}/{repo}/pulls`` ``{title, head, base, body}``: 201, or
  422 ``Validation Failed`` with ``errors[].message`` "A pull request already
  exists for owner:branch." when one is open from that head into that base;
- ``GET /repos/{owner}/{repo}/pulls/{number}``: ``number``, ``html_url``,
  ``state`` (open/closed), ``merged``, ``merged_at``, ``merge_commit_sha``,
  ``head.ref``, ``base.ref``; 404 ``{"message": "Not Found"}``.

GitLab "Merge requests API" (docs.gitlab.com/api/merge_requests), under
``/api/v4``, ``PRIVATE-TOKEN: <token>``, ``:id`` the URL-encoded project path:

- ``GET /projects/:id/merge_requests?state=&source_branch=&target_branch=``;
- ``POST /projects/:id/merge_requests`` ``{source_branch, target_branch, title,
  description}``: 201, or 409 ``{"message": ["Another open merge request
  already exists for this source branch: !<iid>"]}``;
- ``GET /projects/:id/merge_requests/:iid``: ``iid``, ``web_url``, ``state``
  (opened/closed/merged), ``merged_at``, ``merge_commit_sha``,
  ``squash_commit_sha``.

A wrong token is 401 (``Bad credentials`` / ``401 Unauthorized``). The tests
act as the reviewer: ``merge(repo, number, method)`` merges the head branch
into the base on the Git server as the forge's button does (``merge``: a
merge commit; ``squash``: one new commit with the request's title, so the
head's trailers are gone), and records what the forge then reports;
``close(repo, number)`` closes it unmerged.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.support.gitserver import GitServer, git

_GITHUB = re.compile(r"/api/v3/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pulls(?:/(?P<n>\d+))?")
_GITLAB = re.compile(r"/api/v4/projects/(?P<project>[^/]+)/merge_requests(?:/(?P<n>\d+))?")


@dataclass
class Request:
    """One request (our own record): what it asked for, with what, and the answer."""

    number: int
    repo: str  # the Git server's repository name: owner/name
    head: str
    base: str
    title: str
    body: str
    state: str = "open"  # open | closed | merged
    merged_at: str = ""
    merge_commit: str = ""
    squash_commit: str = ""


@dataclass
class ForgeServer:
    server: ThreadingHTTPServer
    git: GitServer
    token: str
    pulls: list[Request] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, git_server: GitServer) -> ForgeServer:
        holder: dict[str, ForgeServer] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                holder["s"].handle(self)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                holder["s"].handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        forge = cls(server, git_server, secrets.token_urlsafe(16))
        holder["s"] = forge
        threading.Thread(target=server.serve_forever, name="forge-server", daemon=True).start()
        return forge

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def github_api(self) -> str:
        return f"{self.url}/api/v3"

    @property
    def gitlab_api(self) -> str:
        return f"{self.url}/api/v4"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the reviewer's side, for tests -------------------------------------------------------

    def find(self, repo: str, head: str) -> Request | None:
        with self.lock:
            return next((p for p in reversed(self.pulls) if p.repo == repo and p.head == head),
                        None)

    def merge(self, repo: str, number: int, method: str = "merge") -> str:
        """Merge request ``number`` on the Git server (``merge`` or ``squash``); the commit
        the merge put on the base, as the forge then reports it."""
        pull = self._pull(repo, number)
        work = Path(tempfile.mkdtemp(prefix="forge-merge-"))
        try:
            clone = work / "repo"
            git("clone", "--quiet", self.git.repo_url(repo, with_credentials=True), str(clone),
                home=work)
            git("checkout", "--quiet", pull.base, cwd=clone, home=work)
            if method == "squash":
                git("merge", "--quiet", "--squash", f"origin/{pull.head}", cwd=clone, home=work)
                git("commit", "--quiet", "-m", f"{pull.title} (#{number})", cwd=clone, home=work)
            else:
                git("merge", "--quiet", "--no-ff", "-m",
                    f"Merge pull request #{number} from {pull.head}", f"origin/{pull.head}",
                    cwd=clone, home=work)
            git("push", "--quiet", "origin", f"HEAD:refs/heads/{pull.base}", cwd=clone, home=work)
            sha = git("rev-parse", "HEAD", cwd=clone, home=work).strip()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with self.lock:
            pull.state = "merged"
            pull.merged_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            pull.merge_commit = sha
            pull.squash_commit = sha if method == "squash" else ""
        return sha

    def close(self, repo: str, number: int) -> None:
        pull = self._pull(repo, number)
        with self.lock:
            pull.state = "closed"

    def _pull(self, repo: str, number: int) -> Request:
        with self.lock:
            return next(p for p in self.pulls if p.repo == repo and p.number == number)

    # --- the server side ----------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        with self.lock:
            self.calls.append((handler.command, handler.path))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        payload = json.loads(handler.rfile.read(length) or b"{}") if length else {}
        if match := _GITHUB.fullmatch(parts.path):
            if handler.headers.get("Authorization") != f"Bearer {self.token}":
                return _send(handler, 401, {"message": "Bad credentials",
                                            "documentation_url": "https://docs.github.com/rest"})
            repo = f"{unquote(match['owner'])}/{unquote(match['repo'])}"
            return self._github(handler, repo, match["n"], query, payload)
        if match := _GITLAB.fullmatch(parts.path):
            if handler.headers.get("PRIVATE-TOKEN") != self.token:
                return _send(handler, 401, {"message": "401 Unauthorized"})
            return self._gitlab(handler, unquote(match["project"]), match["n"], query, payload)
        return _send(handler, 404, {"message": "Not Found"})

    def _exists(self, repo: str) -> bool:
        return (self.git.root / f"{repo}.git").is_dir()

    def _github(self, handler: BaseHTTPRequestHandler, repo: str, number: str | None,
                query: dict[str, str], payload: dict[str, Any]) -> None:
        if not self._exists(repo):
            return _send(handler, 404, {"message": "Not Found"})
        owner = repo.split("/", 1)[0]
        if number is not None and handler.command == "GET":
            pull = self._get(repo, int(number))
            if pull is None:
                return _send(handler, 404, {"message": "Not Found"})
            return _send(handler, 200, self._github_pull(pull))
        if number is None and handler.command == "GET":
            state = query.get("state", "open")
            head = query.get("head", "")
            with self.lock:
                found = [p for p in self.pulls if p.repo == repo
                         and (state == "all" or _github_state(p) == state)
                         and (not head or f"{owner}:{p.head}" == head)
                         and (not query.get("base") or p.base == query["base"])]
            per_page = min(int(query.get("per_page", "30")), 100)
            page = max(int(query.get("page", "1")), 1)
            last = max(1, -(-len(found) // per_page))
            links = [f'<{self.github_api}/repos/{repo}/pulls?per_page={per_page}&page={n}>; '
                     f'rel="{rel}"' for rel, n in (("next", page + 1), ("last", last))
                     if page < last]
            return _send(handler, 200, [self._github_pull(p) for p in
                                        found[(page - 1) * per_page:page * per_page]],
                         {"Link": ", ".join(links)} if links else None)
        if number is None and handler.command == "POST":
            head, base = str(payload.get("head", "")), str(payload.get("base", ""))
            if any(p.repo == repo and p.head == head and p.base == base and p.state == "open"
                   for p in self.pulls):
                return _send(handler, 422, {"message": "Validation Failed", "errors": [
                    {"resource": "PullRequest", "code": "custom",
                     "message": f"A pull request already exists for {owner}:{head}."}]})
            pull = self._open(repo, head, base, str(payload.get("title", "")),
                              str(payload.get("body", "")))
            return _send(handler, 201, self._github_pull(pull))
        return _send(handler, 404, {"message": "Not Found"})

    def _gitlab(self, handler: BaseHTTPRequestHandler, project: str, number: str | None,
                query: dict[str, str], payload: dict[str, Any]) -> None:
        if not self._exists(project):
            return _send(handler, 404, {"message": "404 Project Not Found"})
        if number is not None and handler.command == "GET":
            pull = self._get(project, int(number))
            if pull is None:
                return _send(handler, 404, {"message": "404 Not found"})
            return _send(handler, 200, self._gitlab_mr(pull))
        if number is None and handler.command == "GET":
            state = query.get("state", "all")
            with self.lock:
                found = [p for p in self.pulls if p.repo == project
                         and (state == "all" or _gitlab_state(p) == state)
                         and p.head == query.get("source_branch", p.head)
                         and p.base == query.get("target_branch", p.base)]
            return _send(handler, 200, [self._gitlab_mr(p) for p in found])
        if number is None and handler.command == "POST":
            head = str(payload.get("source_branch", ""))
            base = str(payload.get("target_branch", ""))
            open_ = next((p for p in self.pulls if p.repo == project and p.head == head
                          and p.state == "open"), None)
            if open_ is not None:
                return _send(handler, 409, {"message": [
                    "Another open merge request already exists for this source branch: "
                    f"!{open_.number}"]})
            pull = self._open(project, head, base, str(payload.get("title", "")),
                              str(payload.get("description", "")))
            return _send(handler, 201, self._gitlab_mr(pull))
        return _send(handler, 404, {"message": "404 Not found"})

    def _open(self, repo: str, head: str, base: str, title: str, body: str) -> Request:
        with self.lock:
            number = sum(p.repo == repo for p in self.pulls) + 1  # numbered per repository
            pull = Request(number=number, repo=repo, head=head, base=base,
                           title=title, body=body)
            self.pulls.append(pull)
            return pull

    def _get(self, repo: str, number: int) -> Request | None:
        with self.lock:
            return next((p for p in self.pulls if p.repo == repo and p.number == number), None)

    def _github_pull(self, p: Request) -> dict[str, Any]:
        return {
            "number": p.number, "html_url": f"{self.url}/{p.repo}/pull/{p.number}",
            "state": _github_state(p), "title": p.title, "body": p.body,
            "merged": p.state == "merged", "merged_at": p.merged_at or None,
            "merge_commit_sha": p.merge_commit or None,
            "head": {"ref": p.head, "label": f"{p.repo.split('/')[0]}:{p.head}"},
            "base": {"ref": p.base},
        }

    def _gitlab_mr(self, p: Request) -> dict[str, Any]:
        return {
            "iid": p.number, "web_url": f"{self.url}/{p.repo}/-/merge_requests/{p.number}",
            "state": _gitlab_state(p), "title": p.title, "description": p.body,
            "source_branch": p.head, "target_branch": p.base,
            "merged_at": p.merged_at or None, "squash": bool(p.squash_commit),
            "merge_commit_sha": None if p.squash_commit else (p.merge_commit or None),
            "squash_commit_sha": p.squash_commit or None,
        }


def project_id(repo: str) -> str:
    """GitLab's ``:id`` for a project path."""
    return quote(repo, safe="")


def _github_state(p: Request) -> str:
    return "open" if p.state == "open" else "closed"


def _gitlab_state(p: Request) -> str:
    return {"open": "opened"}.get(p.state, p.state)


def _send(handler: BaseHTTPRequestHandler, status: int, body: Any,
          headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)
