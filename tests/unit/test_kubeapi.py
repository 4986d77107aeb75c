"""adapters/kubeapi.py without an API server: kubeconfig reading, credentials, paths.

What a request does against the real API server (each way of authenticating,
error statuses) is tests/integration/test_kubeapi.py.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import os
import socket
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import kopf
import pytest

from imagepatch import handlers
from imagepatch.adapters import kubeapi
from imagepatch.adapters.errors import ConfigurationError, TransientError
from imagepatch.adapters.kube import classify
from imagepatch.adapters.kubeapi import CORE, ClusterConfig, ExecConfig, path

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(tmp_path: Path, name: str = "config", **doc) -> Path:
    base = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    file = tmp_path / name
    file.write_text(json.dumps({**base, **doc}))
    return file


def test_paths_of_core_grouped_namespaced_and_subresources() -> None:
    assert path(CORE, "v1", "nodes") == "/api/v1/nodes"
    assert path(CORE, "v1", "pods", namespace="a", name="p") == "/api/v1/namespaces/a/pods/p"
    assert path("apps", "v1", "deployments", namespace="n") == \
        "/apis/apps/v1/namespaces/n/deployments"
    assert path("imagepatch.dev", "v1alpha1", "imagepatches", name="x/y", subresource="status") \
        == "/apis/imagepatch.dev/v1alpha1/imagepatches/x%2Fy/status"


def test_a_kubeconfig_context_with_files_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    file = kubeconfig(
        tmp_path / "sub" if False else tmp_path,
        clusters=[{"name": "c", "cluster": {"server": "https://h:6443/",
                                             "certificate-authority": "ca.crt",
                                             "insecure-skip-tls-verify": True}}],
        users=[{"name": "u", "user": {"client-certificate": "sub/u.crt", "client-key": "/k/u.key",
                                      "tokenFile": "tok"}}],
        contexts=[{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        **{"current-context": "ctx"},
    )
    config = kubeapi.load(file)
    assert config == ClusterConfig(
        server="https://h:6443", ca_file=str(tmp_path / "ca.crt"), insecure=True,
        cert_file=str(tmp_path / "sub" / "u.crt"), key_file="/k/u.key",
        token_file=str(tmp_path / "tok"), namespace="ns")


def test_kubeconfig_files_merge_first_wins(tmp_path: Path, monkeypatch) -> None:
    one = kubeconfig(tmp_path, "one", clusters=[{"name": "c", "cluster": {"server": "https://1"}}],
                     users=[{"name": "u", "user": {"token": "t1",
                                                   "client-certificate-data": b64(b"C"),
                                                   "client-key-data": b64(b"K")}}])
    two = kubeconfig(tmp_path, "two", clusters=[{"name": "c", "cluster": {"server": "https://2"},
                                                 }, {"name": "d", "cluster": {
                                                     "server": "https://d",
                                                     "certificate-authority-data": b64(CA)}}],
                     users=[{"name": "u", "user": {"token": "t2"}}],
                     contexts=[{"name": "x", "context": {"cluster": "c", "user": "u"}},
                               {"name": "y", "context": {"cluster": "d"}}],
                     **{"current-context": "x"})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(one), str(tmp_path / "absent"),
                                                     str(two)]))
    config = kubeapi.load()
    assert (config.server, config.token, config.cert_data, config.key_data) == (
        "https://1", "t1", b"C", b"K")
    other = kubeapi.load(context="y")
    assert (other.server, other.ca_data, other.token) == ("https://d", CA, None)


@pytest.mark.parametrize(("doc", "message"), [
    ({}, "no current-context"),
    ({"current-context": "nope"}, "context 'nope' is not in"),
    ({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "gone"}}]},
     "cluster 'gone' is not defined"),
    ({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c"}}],
      "clusters": [{"name": "c", "cluster": {}}]}, "names no server"),
    ({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c",
                                                                     "user": "u"}}],
      "clusters": [{"name": "c", "cluster": {"server": "https://h"}}],
      "users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/"
                                                             "v1alpha1", "command": "x"}}}]},
     "apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported"),
    ({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c",
                                                                     "user": "u"}}],
      "clusters": [{"name": "c", "cluster": {"server": "https://h"}}],
      "users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/"
                                                             "v1"}}}]},
     "names no command"),
])
def test_unusable_kubeconfigs_say_why(tmp_path: Path, doc: dict, message: str) -> None:
    with pytest.raises(kubeapi.ConfigError, match=message):
        kubeapi.load(kubeconfig(tmp_path, **doc))


def test_no_kubeconfig_anywhere(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(kubeapi.ConfigError, match="no kubeconfig"):
        kubeapi.load()


def test_in_cluster_needs_the_environment_and_the_token(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kubeapi.ConfigError, match="not in a pod"):
        kubeapi.in_cluster(tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(kubeapi.ConfigError, match="no ServiceAccount token"):
        kubeapi.in_cluster(tmp_path)
    (tmp_path / "token").write_text("t\n")
    config = kubeapi.in_cluster(tmp_path)
    assert (config.server, config.namespace) == ("https://[fd00::1]:443", None)
    # In a pod, load() takes the ServiceAccount unless a kubeconfig or context is named.
    monkeypatch.setattr(kubeapi, "SERVICE_ACCOUNT_DIR", tmp_path)
    monkeypatch.setattr(kubeapi.in_cluster, "__defaults__", (tmp_path,))
    assert kubeapi.load().token_file == str(tmp_path / "token")


def test_a_kubernetes_client_configuration_is_read_by_attribute() -> None:
    configuration = SimpleNamespace(
        host="https://h:1/", ssl_ca_cert="/ca", verify_ssl=False, cert_file=None, key_file=None,
        api_key={"authorization": "abc"}, api_key_prefix={"authorization": "Bearer"})
    config = kubeapi.from_client_configuration(configuration)
    assert config == ClusterConfig(server="https://h:1", ca_file="/ca", insecure=True,
                                   token="abc")
    assert kubeapi.Client.of(SimpleNamespace(configuration=configuration)).config == config
    current = SimpleNamespace(host="https://h", ssl_ca_cert=None, verify_ssl=True,
                              cert_file="/c", key_file="/k",
                              api_key={"BearerToken": "Bearer xyz"}, api_key_prefix={})
    assert kubeapi.from_client_configuration(current) == ClusterConfig(
        server="https://h", cert_file="/c", key_file="/k", token="xyz")
    client = kubeapi.Client(config)
    assert kubeapi.Client.of(client) is client
    assert kubeapi.Client.of(config).config is config
    with pytest.raises(TypeError):
        kubeapi.Client.of(42)


def test_a_token_file_is_read_when_it_changes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    credentials = kubeapi.Credentials(ClusterConfig(server="https://h", token_file=str(token)))
    assert credentials.current().token == "one"
    token.write_text("second\n")
    assert credentials.current().token == "second"
    token.unlink()
    with pytest.raises(kubeapi.ConfigError, match="cannot read token file"):
        credentials.current()


def plugin(tmp_path: Path, body: str, version: str = "client.authentication.k8s.io/v1",
           **kw) -> ExecConfig:
    script = tmp_path / "plugin"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return ExecConfig(api_version=version, command=str(script), **kw)


def test_a_plugin_credential_is_kept_until_its_expiry(tmp_path: Path) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    answer = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
              "status": {"clientCertificateData": "C", "clientKeyData": "K",
                         "expirationTimestamp": "2026-01-01T00:10:00Z"}}
    config = ClusterConfig(server="https://h", exec=plugin(
        tmp_path, f"echo run >> {tmp_path}/runs; echo '{json.dumps(answer)}'"))
    clock = [now]
    credentials = kubeapi.Credentials(config, now=lambda: clock[0])
    first = credentials.current()
    assert (first.cert_data, first.key_data, first.token) == (b"C", b"K", None)
    assert first.expires == dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.UTC)
    clock[0] = now + dt.timedelta(minutes=9)
    assert credentials.current() is first
    clock[0] = now + dt.timedelta(minutes=9, seconds=31)  # within the margin: asked again
    credentials.current()
    credentials.refresh()
    credentials.current()
    assert (tmp_path / "runs").read_text().count("run") == 3


def test_a_naive_expiry_is_utc_and_a_bare_command_is_found_on_path(tmp_path: Path,
                                                                     monkeypatch) -> None:
    answer = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
              "status": {"token": "t", "expirationTimestamp": "2030-01-01T00:00:00"}}
    found = plugin(tmp_path, f"echo '{json.dumps(answer)}'",
                   "client.authentication.k8s.io/v1beta1")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    credential = kubeapi.run_plugin(ExecConfig(api_version=found.api_version, command="plugin"))
    assert credential.token == "t" and credential.expires == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("body", "message"), [
    ("exit 2", "exited with 2$"),
    ("echo 'login first' >&2; echo secret; exit 1", "exited with 1: login first"),
    ("echo not json", "printed no JSON"),
    ("echo '{\"apiVersion\": \"client.authentication.k8s.io/v1beta1\", "
     "\"kind\": \"ExecCredential\"}'", "did not print an ExecCredential of"),
    ("echo '{\"apiVersion\": \"client.authentication.k8s.io/v1\", "
     "\"kind\": \"ExecCredential\", \"status\": {}}'", "gave neither a token nor"),
])
def test_plugin_failures_say_why_and_never_quote_stdout(tmp_path: Path, body: str,
                                                         message: str) -> None:
    with pytest.raises(kubeapi.ConfigError, match=message) as caught:
        kubeapi.run_plugin(plugin(tmp_path, body))
    assert "secret" not in str(caught.value)


def test_a_plugin_that_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(kubeapi.ConfigError, match="exec credential plugin /nonexistent"):
        kubeapi.run_plugin(ExecConfig(api_version="client.authentication.k8s.io/v1",
                                      command="/nonexistent/plugin"))


def test_exec_stanza_with_cluster_info(tmp_path: Path) -> None:
    file = kubeconfig(
        tmp_path,
        clusters=[{"name": "c", "cluster": {
            "server": "https://h", "certificate-authority-data": b64(CA),
            "tls-server-name": "api", "extensions": [
                {"name": "other", "extension": {}},
                {"name": "client.authentication.k8s.io/exec", "extension": {"region": "x"}}]}}],
        users=[{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "bin/aws",
            "args": ["eks", "get-token"], "env": [{"name": "AWS_PROFILE", "value": "p"}],
            "provideClusterInfo": True}}}],
        contexts=[{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        **{"current-context": "x"})
    stanza = kubeapi.load(file).exec
    assert stanza == ExecConfig(
        api_version="client.authentication.k8s.io/v1", command=str(tmp_path / "bin" / "aws"),
        args=("eks", "get-token"), env=(("AWS_PROFILE", "p"),), provide_cluster_info=True,
        cluster={"server": "https://h", "tls-server-name": "api",
                 "certificate-authority-data": b64(CA), "config": {"region": "x"}})


def test_connection_keywords_for_kopf(tmp_path: Path) -> None:
    static = kubeapi.Client(ClusterConfig(server="https://h", ca_data=CA, cert_data=b"C",
                                          key_data=b"K", namespace="n"))
    assert static.connection() == {"server": "https://h", "ca_data": CA, "certificate_data": b"C",
                                   "private_key_data": b"K", "default_namespace": "n"}
    files = kubeapi.Client(ClusterConfig(server="https://h", ca_file="/ca", insecure=True,
                                         cert_file="/c", key_file="/k", token="t"))
    assert files.connection() == {"server": "https://h", "ca_path": "/ca", "insecure": True,
                                  "certificate_path": "/c", "private_key_path": "/k",
                                  "scheme": "Bearer", "token": "t"}
    answer = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
              "status": {"clientCertificateData": "C", "clientKeyData": "K"}}
    plugged = kubeapi.Client(ClusterConfig(server="https://h", cert_file="/c", key_file="/k",
                                           exec=plugin(tmp_path, f"echo '{json.dumps(answer)}'")))
    assert plugged.connection() == {"server": "https://h", "certificate_data": b"C",
                                    "private_key_data": b"K"}
    for info in (static.connection(), files.connection(), plugged.connection()):
        kopf.ConnectionInfo(**info)  # kopf takes them as they are


def test_classify_maps_statuses_and_transport_failures() -> None:
    gone = classify(kubeapi.ApiError(410, "too old"), "list")
    assert isinstance(gone, TransientError) and gone.reason == "Expired"
    busy = classify(kubeapi.ApiError(429, "", retry_after=3.0), "list")
    assert isinstance(busy, TransientError) and busy.retry_after == 3.0
    assert str(busy) == "list: HTTP 429"
    teapot = classify(kubeapi.ApiError(418, "no"), "list")
    assert isinstance(teapot, ConfigurationError) and teapot.reason == "Rejected"
    down = classify(httpx.ConnectError("refused"), "list")
    assert isinstance(down, TransientError) and str(down) == "list: ConnectError"
    with pytest.raises(ValueError):
        classify(ValueError("a bug"), "list")


def test_an_error_answer_that_is_not_json() -> None:
    """A proxy's page in front of the API server: no message, the hint kept."""
    error = kubeapi._api_error(httpx.Response(503, text="<html>bad gateway</html>",
                                              headers={"Retry-After": "7"}))
    assert (error.status, error.message, error.retry_after) == (503, "", 7.0)
    assert str(error) == "HTTP 503"
    listed = kubeapi._api_error(httpx.Response(500, json=["not", "a", "Status"]))
    assert (listed.message, listed.retry_after) == ("", None)


def test_closing_a_client_twice() -> None:
    client = kubeapi.Client(ClusterConfig(server="https://h", insecure=True))
    client._client(kubeapi.Credential())
    client.close()
    client.close()


def test_login_gives_kopf_the_operators_client(tmp_path: Path, monkeypatch) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    api = kubeapi.Client(ClusterConfig(server="https://h", token_file=str(token)))
    memo = kopf.Memo(kube=SimpleNamespace(api=api))
    info = asyncio.run(handlers.login(memo=memo))
    assert (info.server, info.token) == ("https://h", "one")
    refreshed = []
    monkeypatch.setattr(api.credentials, "refresh", lambda: refreshed.append(1))
    asyncio.run(handlers.login(memo=memo))  # again (after a 401): credentials read afresh
    assert refreshed == [1]
    # Before startup made the operator's client: one of its own, from the environment.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(
        tmp_path, clusters=[{"name": "c", "cluster": {"server": "https://e"}}],
        contexts=[{"name": "x", "context": {"cluster": "c"}}], **{"current-context": "x"})))
    assert asyncio.run(handlers.login(memo=kopf.Memo())).server == "https://e"


def cluster_doc(tmp_path: Path, **cluster: str) -> Path:
    return kubeconfig(tmp_path, clusters=[{"name": "c", "cluster": {"server": "https://h",
                                                                     **cluster}}],
                      contexts=[{"name": "x", "context": {"cluster": "c"}}],
                      **{"current-context": "x"})


@pytest.mark.parametrize(("url", "message"), [
    ("socks5://proxy:1080", "socks5:// is not supported .* use an http:// or https:// proxy"),
    ("socks5h://proxy:1080", "socks5h:// is not supported"),
    ("ftp://proxy", "must be an http:// or https:// URL \\(got scheme 'ftp'\\)"),
    ("proxy:3128", "got scheme 'none'"),
])
def test_a_proxy_url_httpx_cannot_use_is_refused_saying_why(tmp_path: Path, url: str,
                                                            message: str) -> None:
    with pytest.raises(kubeapi.ConfigError, match=message):
        kubeapi.load(cluster_doc(tmp_path, **{"proxy-url": url}))


def test_tls_server_name_and_proxy_url_are_read_and_given_to_kopf(tmp_path: Path) -> None:
    config = kubeapi.load(cluster_doc(tmp_path, **{"proxy-url": "https://u:p@proxy:3128",
                                                   "tls-server-name": "api.internal"}))
    assert (config.tls_server_name, config.proxy_url) == ("api.internal",
                                                          "https://u:p@proxy:3128")
    api = kubeapi.Client(dataclasses.replace(config, token="t"))
    assert api.connection()["proxy_url"] == "https://u:p@proxy:3128"
    # kopf has no field for tls-server-name: login gives it a session of ours
    context = asyncio.run(_login(api))
    assert isinstance(context, kopf.AiohttpSession) and context.server == "https://h"
    plain = kubeapi.load(cluster_doc(tmp_path))
    assert (plain.tls_server_name, plain.proxy_url) == (None, None)
    assert "proxy_url" not in kubeapi.Client(plain).connection()


async def _login(api: kubeapi.Client) -> Any:
    context = await handlers.login(memo=kopf.Memo(kube=SimpleNamespace(api=api)))
    await context.aiohttp_session.close()
    assert context.aiohttp_session._default_headers["Authorization"] == "Bearer t"
    return context


def test_the_server_name_context_names_the_server_in_every_handshake() -> None:
    config = ClusterConfig(server="https://127.0.0.1:6443", tls_server_name="api.internal")
    context = kubeapi.ssl_context(config)
    assert isinstance(context, kubeapi.ServerNameContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    # asyncio passes the host by keyword, older callers by position: both are replaced
    assert context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1") \
        .server_hostname == "api.internal"
    assert context.wrap_bio(incoming, outgoing, False, "127.0.0.1").server_hostname \
        == "api.internal"
    with socket.socket() as sock:
        assert context.wrap_socket(sock, server_hostname="127.0.0.1", do_handshake_on_connect=False
                                   ).server_hostname == "api.internal"
    with socket.socket() as sock:
        assert context.wrap_socket(sock, False, False, True, "127.0.0.1").server_hostname \
            == "api.internal"
    # Without a CA in the kubeconfig, the system's trust store
    assert kubeapi.ssl_context(ClusterConfig(server="https://h", tls_server_name="n",
                                             insecure=True)).verify_mode == ssl.CERT_NONE


def test_the_server_name_context_trusts_the_kubeconfigs_ca_only() -> None:
    import certifi  # httpx's own trust store: a file of real CA certificates

    with open(certifi.where()) as f:
        cadata = f.read().encode()
    one = cadata[:cadata.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")]
    by_file = kubeapi.ssl_context(ClusterConfig(server="https://h", tls_server_name="n",
                                                ca_file=certifi.where()))
    by_data = kubeapi.ssl_context(ClusterConfig(server="https://h", tls_server_name="n", ca_data=one))
    assert isinstance(by_data, kubeapi.ServerNameContext)
    assert by_data.cert_store_stats()["x509_ca"] == 1
    assert by_file.cert_store_stats()["x509_ca"] > 100
