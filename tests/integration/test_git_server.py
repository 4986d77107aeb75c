"""The tests' Git server is a real smart-HTTP server with basic auth (tests/support/gitserver.py).

The GitOps tests deliver apps through it to Flux's source-controller, so it must
behave as a hosted Git server does: refuse a client without credentials or
with wrong ones, serve clones and pushes through git's own http-backend.
"""

from __future__ import annotations

import pytest

from tests.support.gitserver import GitServer, git


def test_a_push_and_a_clone_with_the_credentials_round_trip(git_server: GitServer, tmp_path):
    git_server.create_repo("roundtrip")
    first = git_server.commit("roundtrip", {"app/deploy.yaml": "kind: Deployment\n"}, "first")
    second = git_server.commit("roundtrip", {"app/other.yaml": "kind: Service\n"}, "second")

    git("clone", "--quiet", git_server.repo_url("roundtrip", with_credentials=True),
        str(tmp_path / "copy"), home=tmp_path)
    copy = tmp_path / "copy"
    assert git("log", "--format=%H", cwd=copy).split() == [second, first]
    assert (copy / "app/deploy.yaml").read_text() == "kind: Deployment\n"
    pushes = [r for r in git_server.requests if "git-receive-pack" in r.path and r.method == "POST"]
    assert pushes and all(r.user == git_server.user and r.status == 200 for r in pushes)


@pytest.mark.parametrize("credentials", ["", "flux:wrong-password@"])
def test_a_client_without_the_right_credentials_is_refused(git_server: GitServer, tmp_path,
                                                           credentials):
    git_server.create_repo(f"private{len(credentials)}")
    port = git_server.server.server_address[1]
    url = f"http://{credentials}127.0.0.1:{port}/private{len(credentials)}.git"
    with pytest.raises(RuntimeError, match="Authentication failed|could not read Username"):
        git("ls-remote", url, home=tmp_path)
    assert git_server.requests[-1].status == 401
