"""The operator's own Kubernetes client (adapters/kubeapi.py) against the real API server.

Authentication, each way a kubeconfig or a pod can give it, checked by who the
API server says we are (a SelfSubjectReview):

* the test cluster's admin kubeconfig (client certificate and key as data),
  and a named context of a kubeconfig whose current context is unusable;
* a ServiceAccount token in a kubeconfig, and in a ``tokenFile`` that is
  rewritten with another account's token (rotation: the next request uses it);
* the in-cluster ServiceAccount layout (``KUBERNETES_SERVICE_HOST``/``PORT``,
  the mounted CA and token);
* an ``exec`` credential plugin (v1 and v1beta1, a command relative to the
  kubeconfig), whose credential is kept until its ``expirationTimestamp``.

A cluster's ``tls-server-name`` and ``proxy-url``: the API server is reached
by 127.0.0.1 with ``tls-server-name`` one of its serving certificate's DNS
names (and a wrong name fails the certificate check), and through a real
CONNECT proxy (``tests/support/connectproxy.py``) by a host name only the
proxy resolves; kopf's session (``handlers.named_session``) likewise.

Errors, as ``adapters.kube.classify`` maps them: 404 (NotFoundError), 409
(ConflictError), 403, 422 for a failed JSON-patch test. (410 Gone for an
expired continue token is not reachable here: Kubernetes 1.34 serves
continued listings from its watch cache, which answered even a token whose
revision etcd had compacted; tests/unit/test_kubeapi.py maps the status.)
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import stat
import uuid
from pathlib import Path

import httpx
import pytest

from imagepatch.adapters import kubeapi
from imagepatch.adapters.errors import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
)
from imagepatch.adapters.kube import classify
from imagepatch.adapters.kubeapi import CORE, JSON_PATCH, path
from tests.cluster.harness import kubeconfig_yaml
from tests.support.connectproxy import ConnectProxy
from tests.support.operator import FORBIDDEN

pytestmark = pytest.mark.cluster

REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def whoami(client: kubeapi.Client) -> str:
    review = client.create(REVIEW, {"apiVersion": "authentication.k8s.io/v1",
                                    "kind": "SelfSubjectReview"})
    return str(review["status"]["userInfo"]["username"])


@pytest.fixture(scope="module")
def accounts(kube):
    """A namespace with two ServiceAccounts; their usernames and a token maker."""
    ns = f"kubeapi-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    for name in ("one", "two"):
        kube.kubectl("create", "serviceaccount", name, "-n", ns)

    def token(name: str) -> str:
        return kube.kubectl("create", "token", name, "-n", ns, "--duration=1h").strip()

    yield ns, token
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def cluster(kube) -> dict:
    raw = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    return raw["clusters"][0]["cluster"]


def write_kubeconfig(path: Path, cluster: dict, user: dict) -> Path:
    path.write_text(kubeconfig_yaml(server=cluster["server"],
                                    ca_pem=base64.b64decode(cluster["certificate-authority-data"]),
                                    user=user))
    return path


def test_the_admin_kubeconfig_authenticates_with_its_client_certificate(kube) -> None:
    config = kubeapi.load(kube.kubeconfig)
    assert config.cert_data and config.key_data and config.ca_data
    client = kubeapi.Client(config)
    name = whoami(client)
    print(f"client certificate: {name}")
    assert not name.startswith("system:serviceaccount:")
    assert client.get(path(CORE, "v1", "namespaces", name="default"))["kind"] == "Namespace"


def test_a_named_context_is_used_instead_of_the_current_one(kube, accounts, cluster,
                                                            tmp_path) -> None:
    ns, token = accounts
    doc = json.loads(write_kubeconfig(tmp_path / "k", cluster, {"token": token("one")})
                     .read_text())
    doc["contexts"].append({"name": "broken", "context": {"cluster": "nowhere", "user": "x"}})
    doc["current-context"] = "broken"
    (tmp_path / "k").write_text(json.dumps(doc))
    with pytest.raises(kubeapi.ConfigError, match="nowhere"):
        kubeapi.load(tmp_path / "k")
    client = kubeapi.Client(kubeapi.load(tmp_path / "k", context="imagepatch-local"))
    assert whoami(client) == f"system:serviceaccount:{ns}:one"


def test_a_service_account_token_kubeconfig(accounts, cluster, tmp_path, caplog) -> None:
    ns, token = accounts
    client = kubeapi.Client(kubeapi.load(write_kubeconfig(tmp_path / "k", cluster,
                                                          {"token": token("one")})))
    assert whoami(client) == f"system:serviceaccount:{ns}:one"
    # What that account may not do is a 403, mapped to a configuration problem, and
    # logged as e2e tests look for RBAC denials in the operator's log.
    caplog.set_level(logging.DEBUG, logger="imagepatch.adapters.kubeapi")
    with pytest.raises(kubeapi.ApiError) as caught:
        client.get(path(CORE, "v1", "secrets", namespace="kube-system"))
    [line] = [r.getMessage() for r in caplog.records if " 403" in r.getMessage()]
    assert line == f'{cluster["server"]} "GET /api/v1/namespaces/kube-system/secrets HTTP/1.1" 403'
    assert FORBIDDEN.search(line)
    error = classify(caught.value, "list Secrets")
    assert isinstance(error, ConfigurationError) and caught.value.status == 403
    assert "list Secrets: HTTP 403" in str(error)


def test_a_rotated_token_file_is_read_again(accounts, cluster, tmp_path) -> None:
    ns, token = accounts
    token_file = tmp_path / "token"
    token_file.write_text(token("one"))
    client = kubeapi.Client(kubeapi.load(write_kubeconfig(
        tmp_path / "k", cluster, {"tokenFile": str(token_file)})))
    assert whoami(client) == f"system:serviceaccount:{ns}:one"
    # As the kubelet rotates a projected token: a new file swapped in.
    (tmp_path / "token.new").write_text(token("two"))
    (tmp_path / "token.new").replace(token_file)
    assert whoami(client) == f"system:serviceaccount:{ns}:two"


def test_a_token_the_server_refuses_is_read_again_once(accounts, cluster, tmp_path) -> None:
    """A 401 with a token file: the file is read again and the request retried once,
    even when the file looks unchanged (same inode, size and modification time)."""
    ns, token = accounts
    good = token("one")
    token_file = tmp_path / "token"
    token_file.write_text("not-a-token".ljust(len(good) + 1, "\n"))
    client = kubeapi.Client(kubeapi.load(write_kubeconfig(
        tmp_path / "k", cluster, {"tokenFile": "token"})))  # relative to the kubeconfig
    with pytest.raises(kubeapi.ApiError) as caught:
        whoami(client)
    assert caught.value.status == 401
    before = token_file.stat()
    with token_file.open("r+") as f:  # rewritten in place, then its times put back
        f.write(good.ljust(len(good) + 1, "\n"))
    os.utime(token_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert whoami(client) == f"system:serviceaccount:{ns}:one"


def test_the_in_cluster_service_account(accounts, cluster, tmp_path, monkeypatch) -> None:
    ns, token = accounts
    (tmp_path / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    (tmp_path / "token").write_text(token("two"))
    (tmp_path / "namespace").write_text(ns)
    host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    config = kubeapi.in_cluster(tmp_path)
    assert config.namespace == ns
    client = kubeapi.Client(config)
    assert whoami(client) == f"system:serviceaccount:{ns}:two"
    info = client.connection()  # what kopf is given (handlers.login)
    assert info["server"] == cluster["server"] and info["scheme"] == "Bearer"
    assert info["default_namespace"] == ns


def plugin_script(directory: Path, token: str, *, api_version: str, expires: str | None) -> Path:
    """A credential plugin that prints an ExecCredential and counts its runs."""
    (directory / "bin").mkdir(exist_ok=True)
    script = directory / "bin" / "get-token"
    status = {"token": token, **({"expirationTimestamp": expires} if expires else {})}
    answer = json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "status": status})
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$KUBERNETES_EXEC_INFO" >> "{directory}/runs"\n'
        f'echo "$1 $PLUGIN_ENV" >> "{directory}/args"\n'
        f"cat <<'EOF'\n{answer}\nEOF\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.parametrize("api_version", kubeapi.EXEC_API_VERSIONS)
def test_an_exec_plugin_credential_is_kept_until_it_expires(accounts, cluster, tmp_path,
                                                            api_version) -> None:
    ns, token = accounts
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    plugin_script(tmp_path, token("one"), api_version=api_version, expires=later)
    kubeconfig = write_kubeconfig(tmp_path / "k", cluster, {"exec": {
        "apiVersion": api_version, "command": "./bin/get-token", "args": ["eks"],
        "env": [{"name": "PLUGIN_ENV", "value": "set"}], "provideClusterInfo": True,
        "interactiveMode": "Never"}})
    client = kubeapi.Client(kubeapi.load(kubeconfig))
    assert whoami(client) == f"system:serviceaccount:{ns}:one"
    assert whoami(client) == f"system:serviceaccount:{ns}:one"
    runs = [json.loads(line) for line in (tmp_path / "runs").read_text().splitlines()]
    assert len(runs) == 1  # kept: it expires in an hour
    assert runs[0]["apiVersion"] == api_version and runs[0]["kind"] == "ExecCredential"
    assert runs[0]["spec"]["interactive"] is False
    assert runs[0]["spec"]["cluster"]["server"] == cluster["server"]
    assert (tmp_path / "args").read_text().split() == ["eks", "set"]
    assert client.connection()["expiration"].year >= dt.datetime.now(dt.UTC).year


def test_an_expired_exec_credential_is_asked_for_again(accounts, cluster, tmp_path) -> None:
    ns, token = accounts
    version = "client.authentication.k8s.io/v1"
    # Expires within the safety margin: every request asks the plugin again.
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    plugin_script(tmp_path, token("two"), api_version=version, expires=soon)
    client = kubeapi.Client(kubeapi.load(write_kubeconfig(tmp_path / "k", cluster, {
        "exec": {"apiVersion": version, "command": str(tmp_path / "bin" / "get-token")}})))
    assert whoami(client) == f"system:serviceaccount:{ns}:two"
    assert whoami(client) == f"system:serviceaccount:{ns}:two"
    assert len((tmp_path / "runs").read_text().splitlines()) == 2


def test_a_failing_exec_plugin_is_a_configuration_error(cluster, tmp_path) -> None:
    script = tmp_path / "fail"
    script.write_text("#!/bin/sh\necho 'token expired: run aws sso login' >&2\nexit 3\n")
    script.chmod(0o755)
    client = kubeapi.Client(kubeapi.load(write_kubeconfig(tmp_path / "k", cluster, {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": str(script)}})))
    with pytest.raises(kubeapi.ConfigError) as caught:
        whoami(client)
    error = classify(caught.value, "get token")
    assert isinstance(error, ConfigurationError)
    assert "exited with 3: token expired: run aws sso login" in str(error)


@pytest.fixture
def configmaps(kube):
    ns = f"kubeapi-err-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    for i in range(3):
        kube.kubectl("create", "configmap", f"cm-{i}", "-n", ns, f"--from-literal=i={i}")
    yield ns
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_not_found_conflict_and_a_failed_patch_test(kube, configmaps) -> None:
    client = kubeapi.Client(kubeapi.load(kube.kubeconfig))
    cms = path(CORE, "v1", "configmaps", namespace=configmaps)
    with pytest.raises(kubeapi.ApiError) as missing:
        client.get(path(CORE, "v1", "configmaps", namespace=configmaps, name="nope"))
    assert isinstance(classify(missing.value, "get"), NotFoundError)
    with pytest.raises(kubeapi.ApiError) as taken:
        client.create(cms, {"metadata": {"name": "cm-0"}, "data": {}})
    error = classify(taken.value, "create ConfigMap")
    assert isinstance(error, ConflictError) and "already exists" in str(error)
    current = client.get(f"{cms}/cm-0")
    stale = {**current, "data": {"i": "x"}, "metadata": {**current["metadata"],
                                                           "resourceVersion": "1"}}
    with pytest.raises(kubeapi.ApiError) as changed:
        client.replace(f"{cms}/cm-0", stale)
    assert isinstance(classify(changed.value, "update"), ConflictError)
    with pytest.raises(kubeapi.ApiError) as failed:
        client.patch(f"{cms}/cm-0", [{"op": "test", "path": "/data/i", "value": "9"}],
                     content_type=JSON_PATCH)
    assert failed.value.status == 422
    patched = client.patch(f"{cms}/cm-0", [{"op": "replace", "path": "/data/i", "value": "9"}],
                           content_type=JSON_PATCH)
    assert patched["data"] == {"i": "9"}
    client.delete(f"{cms}/cm-2")
    names = [cm["metadata"]["name"] for page in client.list_pages(cms, limit=1)
             for cm in page["items"]]
    assert names == ["cm-0", "cm-1", "kube-root-ca.crt"] or names[:2] == ["cm-0", "cm-1"]
    assert client.get(cms, fieldSelector="metadata.name=cm-1")["items"][0]["data"] == {"i": "1"}


# -- tls-server-name and proxy-url (cluster entry) ---------------------------------------------


def admin_variant(kube, tmp_path: Path, **cluster: str) -> kubeapi.ClusterConfig:
    """The admin kubeconfig with its cluster entry changed (``server``, ``tls-server-name``...)."""
    import yaml

    doc = yaml.safe_load(Path(kube.kubeconfig).read_text())
    doc["clusters"][0]["cluster"].update(cluster)
    (tmp_path / "variant").write_text(yaml.safe_dump(doc))
    return kubeapi.load(tmp_path / "variant")


def test_tls_server_name_is_the_name_the_certificate_is_checked_against(kube, tmp_path) -> None:
    # 127.0.0.1 is among the serving certificate's names; kubernetes.default.svc too
    config = admin_variant(kube, tmp_path, **{"tls-server-name": "kubernetes.default.svc"})
    assert config.tls_server_name == "kubernetes.default.svc"
    assert kubeapi.Client(config).get("/version")["major"]
    # A name the certificate does not carry fails, although 127.0.0.1 would have passed
    wrong = admin_variant(kube, tmp_path, **{"tls-server-name": "wrong.example"})
    with pytest.raises(httpx.ConnectError, match="Hostname mismatch|doesn't match|CERTIFICATE"):
        kubeapi.Client(wrong).get("/version")


def test_proxy_url_tunnels_every_request_through_the_proxy(kube, tmp_path) -> None:
    port = int(kubeapi.load(kube.kubeconfig).server.rsplit(":", 1)[1])
    proxy = ConnectProxy.start(resolve={"apiserver.corp.test": "127.0.0.1"})
    try:
        # A host name only the proxy resolves, not on the certificate: tls-server-name says
        # which of its names to expect.
        config = admin_variant(kube, tmp_path, server=f"https://apiserver.corp.test:{port}",
                               **{"proxy-url": proxy.url, "tls-server-name": "kubernetes"})
        assert config.proxy_url == proxy.url
        client = kubeapi.Client(config)
        assert not whoami(client).startswith("system:serviceaccount:")
        assert client.get(path(CORE, "v1", "namespaces", name="default"))["kind"] == "Namespace"
        assert ("apiserver.corp.test", port) in proxy.tunnels
        assert {host for host, _ in proxy.tunnels} == {"apiserver.corp.test"}
        assert client.connection()["proxy_url"] == proxy.url  # kopf's too
        # Without tls-server-name the URL's host is checked, and the certificate lacks it
        hostless = admin_variant(kube, tmp_path, server=f"https://apiserver.corp.test:{port}",
                                 **{"proxy-url": proxy.url})
        with pytest.raises(httpx.ConnectError):
            kubeapi.Client(hostless).get("/version")
    finally:
        proxy.stop()


def test_kopfs_session_honours_tls_server_name_and_proxy_url(kube, tmp_path) -> None:
    import asyncio

    from imagepatch.handlers import named_session

    port = int(kubeapi.load(kube.kubeconfig).server.rsplit(":", 1)[1])
    proxy = ConnectProxy.start(resolve={"apiserver.corp.test": "127.0.0.1"})

    async def version(config: kubeapi.ClusterConfig) -> str:
        api = kubeapi.Client(config)
        context = named_session(api, api.connection())
        async with context.aiohttp_session as session:
            async with session.get(f"{context.server}/version") as response:
                response.raise_for_status()
                return str((await response.json())["gitVersion"])

    try:
        good = admin_variant(kube, tmp_path, server=f"https://apiserver.corp.test:{port}",
                             **{"proxy-url": proxy.url, "tls-server-name": "kubernetes"})
        assert asyncio.run(version(good)).startswith("v1.")
        assert proxy.tunnels == [("apiserver.corp.test", port)]
        wrong = admin_variant(kube, tmp_path, **{"tls-server-name": "wrong.example"})
        with pytest.raises(Exception, match="(?i)certificate|hostname"):
            asyncio.run(version(wrong))
    finally:
        proxy.stop()
