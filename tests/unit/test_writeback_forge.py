"""adapters/forge.py: our pull-request adapter's HTTP shape, against httpx.MockTransport.

No GitHub or GitLab is reachable from the test machines, so this checks our
own adapter's requests and its reading of the answers, with the request and
response shapes the forges document:

- GitHub REST "Pulls" (docs.github.com/en/rest/pulls/pulls): list
  ``GET /repos/{owner}/{repo}/pulls?state=open&head=owner:branch&base=…``,
  create ``POST /repos/{owner}/{repo}/pulls`` with ``title/head/base/body``,
  201 with ``number`` and ``html_url``; a duplicate is ``422 Validation
  Failed`` with ``errors[].message`` "A pull request already exists for …".
- GitLab "Merge requests API" (docs.gitlab.com/api/merge_requests): list
  ``GET /projects/:id/merge_requests?state=opened&source_branch=…&target_branch=…``,
  create ``POST /projects/:id/merge_requests`` with ``source_branch/target_branch/
  title/description``, 201 with ``iid`` and ``web_url``; a duplicate is ``409``
  with ``message: ["Another open merge request already exists for this source
  branch: !7"]``.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import stamina

from imagepatch.adapters.errors import ConfigurationError, NotFoundError, TransientError
from imagepatch.adapters.forge import (
    GitHub,
    GitLab,
    PullRequest,
    PullRequestState,
    RetrySettings,
    forge_for,
    open_pull_request,
    pull_request_state,
)
from imagepatch.core import reasons

TOKEN = "ghp_secret0123456789"
PR = {"number": 42, "html_url": "https://github.com/octo/shop/pull/42", "state": "open",
      "head": {"ref": "imagepatch/app"}, "base": {"ref": "main"}}
MR = {"iid": 7, "web_url": "https://gitlab.example/group/sub/app/-/merge_requests/7",
      "state": "opened", "source_branch": "imagepatch/app", "target_branch": "main"}


class Forge:
    """A scripted HTTP peer: answers in order, records every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


def run(coro):
    return asyncio.run(coro)


def github(peer: Forge, **kw) -> GitHub:
    return GitHub(owner="octo", repo="shop", token=TOKEN, client=peer.client(), **kw)


def open_github(peer: Forge) -> PullRequest:
    async def go() -> PullRequest:
        async with github(peer) as forge:
            return await forge.open_pull_request(head="imagepatch/app", base="main",
                                                 title="imagepatch: pin app", body="details")
    return run(go())


# -- GitHub --------------------------------------------------------------------------------


def test_github_lists_then_creates_with_the_documented_request_shape():
    peer = Forge(httpx.Response(200, json=[]), httpx.Response(201, json=PR))
    assert open_github(peer) == PullRequest(
        number=42, url="https://github.com/octo/shop/pull/42", created=True)
    listing, create = peer.requests
    assert listing.method == "GET" and listing.url.path == "/repos/octo/shop/pulls"
    assert dict(listing.url.params) == {"state": "open", "head": "octo:imagepatch/app",
                                        "base": "main"}
    assert listing.url.host == "api.github.com"
    assert create.method == "POST" and create.url.path == "/repos/octo/shop/pulls"
    assert json.loads(create.content) == {"title": "imagepatch: pin app",
                                          "head": "imagepatch/app", "base": "main",
                                          "body": "details"}
    for request in peer.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"


def test_github_an_open_request_for_the_branch_is_returned_not_duplicated():
    peer = Forge(httpx.Response(200, json=[PR]))
    assert open_github(peer).created is False
    assert [r.method for r in peer.requests] == ["GET"]


def test_github_422_already_exists_after_a_lost_race_returns_the_winner():
    exists = {"message": "Validation Failed", "errors": [
        {"resource": "PullRequest", "code": "custom",
         "message": "A pull request already exists for octo:imagepatch/app."}],
        "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"}
    peer = Forge(httpx.Response(200, json=[]), httpx.Response(422, json=exists),
                 httpx.Response(200, json=[PR]))
    assert open_github(peer) == PullRequest(number=42, url=PR["html_url"], created=False)
    assert [r.method for r in peer.requests] == ["GET", "POST", "GET"]


def test_github_already_exists_but_not_listed_is_a_configuration_error():
    exists = {"message": "Validation Failed",
              "errors": [{"message": "A pull request already exists for other:imagepatch/app."}]}
    peer = Forge(httpx.Response(200, json=[]), httpx.Response(422, json=exists),
                 httpx.Response(200, json=[]))
    with pytest.raises(ConfigurationError, match="lists none open") as info:
        open_github(peer)
    assert info.value.reason == reasons.GIT_FORGE_REJECTED


def test_github_other_validation_failures_say_what_github_said():
    problem = {"message": "Validation Failed", "errors": [
        {"resource": "PullRequest", "code": "custom",
         "message": "No commits between main and imagepatch/app"}]}
    peer = Forge(httpx.Response(200, json=[]), httpx.Response(422, json=problem))
    with pytest.raises(ConfigurationError) as info:
        open_github(peer)
    assert info.value.reason == reasons.GIT_FORGE_REJECTED
    assert "422: Validation Failed; No commits between main and imagepatch/app" in str(info.value)


def test_github_401_is_a_token_problem_and_never_shows_the_token():
    peer = Forge(httpx.Response(401, json={"message": f"Bad credentials {TOKEN}"}))
    with pytest.raises(ConfigurationError) as info:
        open_github(peer)
    assert info.value.reason == reasons.GIT_FORGE_AUTH_FAILED
    assert TOKEN not in str(info.value) and "401" in str(info.value)
    assert "GitHub at api.github.com (GET octo/shop)" in str(info.value)


@pytest.mark.parametrize(("status", "error", "reason"), [
    (403, ConfigurationError, reasons.GIT_FORGE_ACCESS_DENIED),
    (404, NotFoundError, reasons.GIT_FORGE_NOT_FOUND),
    (400, ConfigurationError, reasons.GIT_FORGE_REJECTED),
    (301, ConfigurationError, reasons.GIT_FORGE_REJECTED),
])
def test_github_other_refusals_are_classified(status, error, reason):
    peer = Forge(httpx.Response(status, json={"message": "no"}))
    with pytest.raises(error) as info:
        open_github(peer)
    assert info.value.reason == reason and TOKEN not in str(info.value)


def test_github_rate_limit_and_server_errors_are_retried_then_succeed():
    limited = httpx.Response(403, headers={"x-ratelimit-remaining": "0",
                                           "x-ratelimit-reset": "0"}, json={"message": "x"})
    spent = httpx.Response(403, headers={"x-ratelimit-remaining": "0"})
    peer = Forge(limited, spent, httpx.Response(429, headers={"retry-after": "1"}),
                 httpx.Response(502), httpx.ConnectError("refused"),
                 httpx.ReadTimeout("slow"), httpx.Response(200, json=[PR]))
    with stamina.set_testing(True, attempts=7):
        assert open_github(peer).number == 42
    assert len(peer.requests) == 7


def test_github_transient_failures_stop_after_the_attempts():
    peer = Forge(*[httpx.Response(503)] * 3)
    with stamina.set_testing(True, attempts=3), pytest.raises(TransientError) as info:
        open_github(peer)
    assert info.value.reason == reasons.GIT_FORGE_UNAVAILABLE and len(peer.requests) == 3


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html>login</html>"),
    httpx.Response(200, json={"not": "a list"}),
    httpx.Response(200, json=[{"html_url": "x"}]),
])
def test_github_answers_that_are_not_the_api_are_configuration_errors(answer):
    with pytest.raises(ConfigurationError, match="apiURL|without 'number'"):
        open_github(Forge(answer))


def test_github_validation_answer_without_json_or_message_still_reads():
    for answer in (httpx.Response(422, text="nope"), httpx.Response(422, json=["a list"])):
        peer = Forge(httpx.Response(200, json=[]), answer)
        with pytest.raises(ConfigurationError, match=r"422: \(no message\)"):
            open_github(peer)
    peer = Forge(httpx.Response(200, json=[]), httpx.Response(422, json={
        "error": {"title": "is missing"}, "errors": ["odd", {"message": 3}]}))
    with pytest.raises(ConfigurationError, match="422: title is missing"):
        open_github(peer)


# -- GitLab --------------------------------------------------------------------------------


def gitlab(peer: Forge) -> GitLab:
    return GitLab(project="group/sub/app", token=TOKEN, api_url="https://gitlab.example/api/v4",
                  client=peer.client())


def open_gitlab(peer: Forge) -> PullRequest:
    async def go() -> PullRequest:
        async with gitlab(peer) as forge:
            return await forge.open_pull_request(head="imagepatch/app", base="main",
                                                 title="imagepatch: pin app", body="details")
    return run(go())


def test_gitlab_lists_then_creates_with_the_documented_request_shape():
    peer = Forge(httpx.Response(200, json=[]), httpx.Response(201, json=MR))
    assert open_gitlab(peer) == PullRequest(number=7, url=MR["web_url"], created=True)
    listing, create = peer.requests
    assert listing.url.raw_path.split(b"?")[0] == \
        b"/api/v4/projects/group%2Fsub%2Fapp/merge_requests"
    assert dict(listing.url.params) == {"state": "opened", "source_branch": "imagepatch/app",
                                        "target_branch": "main"}
    assert json.loads(create.content) == {"source_branch": "imagepatch/app",
                                          "target_branch": "main",
                                          "title": "imagepatch: pin app",
                                          "description": "details"}
    for request in peer.requests:
        assert request.headers["private-token"] == TOKEN
        assert "authorization" not in request.headers


def test_gitlab_409_another_open_merge_request_returns_it():
    conflict = {"message": [
        "Another open merge request already exists for this source branch: !7"]}
    peer = Forge(httpx.Response(200, json=[]), httpx.Response(409, json=conflict),
                 httpx.Response(200, json=[MR]))
    assert open_gitlab(peer) == PullRequest(number=7, url=MR["web_url"], created=False)


def test_gitlab_open_request_found_first():
    peer = Forge(httpx.Response(200, json=[MR]))
    assert open_gitlab(peer).created is False and len(peer.requests) == 1


# -- from the policy's repository URL ------------------------------------------------------


@pytest.mark.parametrize(("provider", "url", "api", "where"), [
    ("GitHub", "https://github.com/octo/shop.git", "https://api.github.com", "octo/shop"),
    ("github", "git@github.com:octo/shop.git", "https://api.github.com", "octo/shop"),
    ("GitHub", "ssh://git@ghe.example:2222/octo/shop.git", "https://ghe.example/api/v3",
     "octo/shop"),
    ("GitHub", "http://127.0.0.1:8080/octo/shop/", "http://127.0.0.1:8080/api/v3",
     "octo/shop"),
    ("GitLab", "https://gitlab.example/group/sub/app.git", "https://gitlab.example/api/v4",
     "group/sub/app"),
    ("GitLab", "git@gitlab.example:group/app.git", "https://gitlab.example/api/v4", "group/app"),
])
def test_forge_for_reads_the_repository_and_api_from_the_git_url(provider, url, api, where):
    forge = forge_for(provider, repository_url=url, token=TOKEN)
    assert forge.api_url == api and forge.repository == where
    run(forge.aclose())


def test_forge_for_takes_an_explicit_api_url_and_a_gitlab_relative_url():
    forge = forge_for("GitLab", repository_url="https://host.example/gitlab/group/app.git",
                      token=TOKEN, api_url="https://host.example/gitlab/api/v4/")
    assert forge.api_url == "https://host.example/gitlab/api/v4"
    assert forge.repository == "group/app"
    run(forge.aclose())
    forge = forge_for("GitHub", repository_url="https://github.com/o/r", token=TOKEN,
                      api_url="https://proxy.example/github")
    assert forge.api_url == "https://proxy.example/github" and forge.repository == "o/r"
    run(forge.aclose())


@pytest.mark.parametrize(("provider", "url", "token", "match"), [
    ("GitHub", "not a url", TOKEN, "cannot tell the repository"),
    ("GitHub", "https://github.com/onlyone", TOKEN, "cannot tell the repository"),
    ("Gitea", "https://gitea.example/o/r", TOKEN, "not GitHub or GitLab"),
    ("GitHub", "https://github.com/o/r", "", "token is empty"),
])
def test_forge_for_refuses_what_it_cannot_use(provider, url, token, match):
    with pytest.raises(ConfigurationError, match=match):
        forge_for(provider, repository_url=url, token=token)


def test_open_pull_request_end_to_end_with_an_injected_client():
    peer = Forge(httpx.Response(200, json=[]), httpx.Response(201, json=PR))
    result = run(open_pull_request(
        "GitHub", repository_url="https://github.com/octo/shop.git", token=TOKEN,
        head="imagepatch/app", base="main", title="t", body="b", client=peer.client(),
        retry=RetrySettings(attempts=1)))
    assert result.created and result.number == 42



# -- what became of a request (docs: GitHub "Get a pull request", GitLab "Get single MR") ---

MERGE_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
SQUASH_SHA = "1d2c3b4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


def state_of(peer: Forge, provider: str = "GitHub", number: int = 42) -> PullRequestState:
    url = ("https://github.com/octo/shop.git" if provider == "GitHub"
           else "https://gitlab.example/group/sub/app.git")
    return run(pull_request_state(provider, repository_url=url, token=TOKEN, number=number,
                                  client=peer.client(), retry=RetrySettings(attempts=1)))


@pytest.mark.parametrize(("answer", "expected"), [
    ({**PR, "state": "open", "merged": False, "merged_at": None, "merge_commit_sha": "e5bd3"},
     PullRequestState(state="open", url=PR["html_url"])),  # a test merge's sha: not a merge
    ({**PR, "state": "closed", "merged": False, "merged_at": None},
     PullRequestState(state="closed", url=PR["html_url"])),
    ({**PR, "state": "closed", "merged": True, "merged_at": "2026-12-06T01:02:03Z",
      "merge_commit_sha": MERGE_SHA},
     PullRequestState(state="merged", url=PR["html_url"], merge_commit=MERGE_SHA,
                      merged_at="2026-12-06T01:02:03Z")),
    ({**PR, "state": "closed", "merged_at": "2026-12-06T01:02:03Z", "merge_commit_sha": None},
     PullRequestState(state="merged", url=PR["html_url"], merged_at="2026-12-06T01:02:03Z")),
])
def test_github_reads_one_request_as_documented(answer, expected):
    peer = Forge(httpx.Response(200, json=answer))
    assert state_of(peer) == expected
    [request] = peer.requests
    assert (request.method, request.url.path) == ("GET", "/repos/octo/shop/pulls/42")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(("answer", "expected"), [
    ({**MR, "state": "opened"}, PullRequestState(state="open", url=MR["web_url"])),
    ({**MR, "state": "locked"}, PullRequestState(state="open", url=MR["web_url"])),
    ({**MR, "state": "closed", "merge_commit_sha": None},
     PullRequestState(state="closed", url=MR["web_url"])),
    ({**MR, "state": "merged", "merged_at": "2026-12-06T01:02:03.000Z", "squash": True,
      "merge_commit_sha": MERGE_SHA, "squash_commit_sha": SQUASH_SHA},
     PullRequestState(state="merged", url=MR["web_url"], merge_commit=SQUASH_SHA,
                      merged_at="2026-12-06T01:02:03.000Z")),
    ({**MR, "state": "merged", "merged_at": "2026-12-06T01:02:03.000Z", "squash": False,
      "merge_commit_sha": MERGE_SHA, "squash_commit_sha": None},
     PullRequestState(state="merged", url=MR["web_url"], merge_commit=MERGE_SHA,
                      merged_at="2026-12-06T01:02:03.000Z")),
    ({**MR, "state": "merged", "merge_commit_sha": None, "squash_commit_sha": None},
     PullRequestState(state="merged", url=MR["web_url"])),  # a fast-forward merge
])
def test_gitlab_reads_one_merge_request_as_documented(answer, expected):
    peer = Forge(httpx.Response(200, json=answer))
    assert state_of(peer, "GitLab", 7) == expected
    [request] = peer.requests
    assert request.url.raw_path.decode() == "/api/v4/projects/group%2Fsub%2Fapp/merge_requests/7"
    assert request.headers["private-token"] == TOKEN


@pytest.mark.parametrize("answer", [[PR], {"message": "hi"}, {**PR, "number": "42"}])
def test_a_request_read_back_without_its_number_is_not_the_api(answer):
    with pytest.raises(ConfigurationError, match="is apiURL the forge's REST API"):
        state_of(Forge(httpx.Response(200, json=answer)))


def test_reading_a_request_is_retried_and_classified_like_every_call():
    peer = Forge(httpx.Response(502), httpx.Response(200, json={**PR, "state": "open"}))
    state = run(pull_request_state(
        "GitHub", repository_url="https://github.com/octo/shop.git", token=TOKEN, number=42,
        client=peer.client(), retry=RetrySettings(attempts=2, wait_initial=0.0, wait_max=0.0,
                                                  wait_jitter=0.0)))
    assert state.state == "open" and len(peer.requests) == 2
    with pytest.raises(NotFoundError):
        state_of(Forge(httpx.Response(404, json={"message": "Not Found"})))
