"""A small synchronous Kubernetes REST client on httpx: the calls imagepatch makes, nothing more.

The ``kubernetes`` client package imports a model class for every API type
(tens of MiB resident, issue 21: the operator's RSS target), while the
operator reads and writes plain JSON and makes about a dozen kinds of call.
This module makes those calls over httpx (a dependency already): GET, LIST
(label and field selectors, ``limit``/``continue`` paging), POST, PUT,
DELETE and PATCH (merge, strategic merge, JSON patch) on any group's
resources, with a timeout on every request.

Credentials come from the same places kubectl takes them (``load``):

* in a pod, the ServiceAccount (``KUBERNETES_SERVICE_HOST``/``PORT``, the
  mounted CA and token). Bound tokens expire (an hour by default) and the
  kubelet rewrites the file before they do, so a token file is read again
  whenever it changes, and once more after a 401;
* else the kubeconfig (``$KUBECONFIG``, a list merged as kubectl merges it,
  or ``~/.kube/config``), its current context or a named one: server, CA
  (file or data), client certificate and key (file or data), token,
  ``tokenFile``, ``insecure-skip-tls-verify`` and ``exec`` credential plugins
  (``client.authentication.k8s.io/v1`` and ``v1beta1`` ExecCredential, e.g.
  ``aws eks get-token``). A plugin's credential is kept until its
  ``expirationTimestamp`` (or a 401) and then asked for again.
  A cluster's ``tls-server-name`` is, as for kubectl, the name sent as SNI and
  checked against the server's certificate in place of the server URL's host;
  its ``proxy-url`` (``http://`` or ``https://``) is the proxy every request
  goes through (a CONNECT tunnel), whatever ``HTTPS_PROXY`` says. A
  ``socks5://`` proxy-url is refused with a ConfigError: httpx needs the
  ``socksio`` package for it, which imagepatch does not ship.

A failed request raises ``ApiError`` (the status, the API's Status message,
``Retry-After``); connection failures and timeouts are httpx's
``TransportError``. ``adapters.kube.classify`` maps both to the adapter error
kinds. ``connection`` gives kopf the same endpoint and credentials
(``handlers.login``).
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import json
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# A plugin's credential is asked for again this long before it expires, so a
# request never leaves with one that expires on its way.
EXEC_EXPIRY_MARGIN = dt.timedelta(seconds=30)
EXEC_TIMEOUT = 60.0  # seconds a credential plugin may take (aws eks get-token: ~1 s)

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

CORE = ""  # the core API group's name (``/api/v1``)


class ConfigError(Exception):
    """No usable credentials: no kubeconfig, a context that does not exist, a failed plugin."""


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str, *, reason: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}" + (f": {message}" if message else ""))
        self.status = status
        self.message = message
        self.reason = reason
        self.retry_after = retry_after


# -- where the API is and who we are ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExecConfig:
    """A kubeconfig user's ``exec`` stanza (a credential plugin)."""

    api_version: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    provide_cluster_info: bool = False
    cluster: Mapping[str, Any] = field(default_factory=dict)  # spec.cluster, when provided


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """An endpoint and the credentials to use on it (paths absolute, data as bytes)."""

    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None
    exec: ExecConfig | None = None
    namespace: str | None = None
    tls_server_name: str | None = None  # SNI and the name the certificate must carry
    proxy_url: str | None = None  # http(s)://host:port (credentials in it allowed)


# kubeconfig proxy-url schemes: kubectl takes http, https and socks5; httpx
# speaks socks5 only with the socksio package, which is not a dependency.
PROXY_SCHEMES = ("http", "https")


def _proxy_url(value: object, context: str) -> str | None:
    if not value:
        return None
    text = str(value)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("socks5", "socks5h"):
        raise ConfigError(
            f"context {context!r}: proxy-url {scheme}:// is not supported by imagepatch's "
            "Kubernetes client (it needs the socksio package); use an http:// or https:// "
            "proxy, or run the operator where the API server is reachable")
    if scheme not in PROXY_SCHEMES:
        raise ConfigError(f"context {context!r}: proxy-url must be an http:// or https:// URL "
                          f"(got scheme {scheme or 'none'!r})")
    return text


def load(kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
         ) -> ClusterConfig:
    """A named ``kubeconfig``; else in a pod its ServiceAccount; else ``$KUBECONFIG`` or
    ``~/.kube/config`` (as the operator always chose, and kopf does)."""
    if kubeconfig is not None:
        return from_kubeconfig([Path(kubeconfig)], context)
    if context is None:
        try:
            return in_cluster()
        except ConfigError:
            pass
    paths = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return from_kubeconfig(paths or [Path.home() / ".kube" / "config"], context)


def in_cluster(directory: Path = SERVICE_ACCOUNT_DIR) -> ClusterConfig:
    """The pod's ServiceAccount: the token is a file the kubelet rewrites (read per change)."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
        "KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("not in a pod: KUBERNETES_SERVICE_HOST/PORT are not set")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    token = directory / "token"
    if not token.is_file():
        raise ConfigError(f"no ServiceAccount token at {token}")
    namespace = directory / "namespace"
    return ClusterConfig(
        server=f"https://{host}:{port}",
        ca_file=str(directory / "ca.crt"),
        token_file=str(token),
        namespace=namespace.read_text().strip() if namespace.is_file() else None,
    )


def from_kubeconfig(paths: list[Path], context: str | None = None) -> ClusterConfig:
    """A context of the kubeconfig files ``paths``, merged as kubectl merges them: the first
    file to name a cluster, user, context or current-context wins."""
    clusters: dict[str, tuple[dict[str, Any], Path]] = {}
    users: dict[str, tuple[dict[str, Any], Path]] = {}
    contexts: dict[str, dict[str, Any]] = {}
    current = None
    found = False
    for path in paths:
        if not path.is_file():
            continue
        found = True
        doc = yaml.safe_load(path.read_text()) or {}
        base = path.resolve().parent
        for entry in doc.get("clusters") or ():
            clusters.setdefault(entry.get("name"), (entry.get("cluster") or {}, base))
        for entry in doc.get("users") or ():
            users.setdefault(entry.get("name"), (entry.get("user") or {}, base))
        for entry in doc.get("contexts") or ():
            contexts.setdefault(entry.get("name"), entry.get("context") or {})
        current = current or doc.get("current-context")
    if not found:
        raise ConfigError(f"no kubeconfig at {os.pathsep.join(map(str, paths))}")
    name = context or current
    if not name:
        raise ConfigError("the kubeconfig has no current-context; name one")
    if name not in contexts:
        raise ConfigError(f"context {name!r} is not in the kubeconfig")
    ctx = contexts[name]
    if ctx.get("cluster") not in clusters:
        raise ConfigError(f"context {name!r}: cluster {ctx.get('cluster')!r} is not defined")
    cluster, cbase = clusters[ctx["cluster"]]
    user, ubase = users.get(ctx.get("user") or "", ({}, cbase))
    if not cluster.get("server"):
        raise ConfigError(f"context {name!r}: its cluster names no server")

    def path_of(value: str | None, base: Path) -> str | None:
        return str(base / value) if value else None  # relative to the file that named it

    def data_of(value: str | None) -> bytes | None:
        return base64.b64decode(value) if value else None

    plugin = None
    if user.get("exec"):
        plugin = _exec_config(user["exec"], ubase, cluster)
    return ClusterConfig(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=path_of(cluster.get("certificate-authority"), cbase),
        ca_data=data_of(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=path_of(user.get("client-certificate"), ubase),
        key_file=path_of(user.get("client-key"), ubase),
        cert_data=data_of(user.get("client-certificate-data")),
        key_data=data_of(user.get("client-key-data")),
        token=user.get("token") or None,
        token_file=path_of(user.get("tokenFile"), ubase),
        exec=plugin,
        namespace=ctx.get("namespace") or None,
        tls_server_name=str(cluster.get("tls-server-name") or "") or None,
        proxy_url=_proxy_url(cluster.get("proxy-url"), name),
    )


def _exec_config(stanza: Mapping[str, Any], base: Path, cluster: Mapping[str, Any]
                 ) -> ExecConfig:
    version = stanza.get("apiVersion") or ""
    if version not in EXEC_API_VERSIONS:
        raise ConfigError(f"exec credential plugin apiVersion {version!r} is not supported "
                          f"(use one of {', '.join(EXEC_API_VERSIONS)})")
    command = str(stanza.get("command") or "")
    if not command:
        raise ConfigError("exec credential plugin names no command")
    if os.sep in command and not os.path.isabs(command):
        command = str(base / command)  # as client-go: relative to the kubeconfig's directory
    info: dict[str, Any] = {}
    if stanza.get("provideClusterInfo"):
        info = {"server": cluster.get("server")}
        for key in ("tls-server-name", "insecure-skip-tls-verify", "certificate-authority-data",
                    "proxy-url", "disable-compression"):
            if cluster.get(key):
                info[key] = cluster[key]
        extension = next((e.get("extension") for e in cluster.get("extensions") or ()
                          if e.get("name") == "client.authentication.k8s.io/exec"), None)
        if extension is not None:
            info["config"] = extension
    return ExecConfig(
        api_version=version,
        command=command,
        args=tuple(str(a) for a in stanza.get("args") or ()),
        env=tuple((str(e["name"]), str(e.get("value", ""))) for e in stanza.get("env") or ()),
        provide_cluster_info=bool(stanza.get("provideClusterInfo")),
        cluster=info,
    )


def from_client_configuration(configuration: Any) -> ClusterConfig:
    """The endpoint and credentials of a ``kubernetes.client.Configuration`` (the tests' and
    the CLI's clients are that; read by attribute, without importing the package)."""
    keys = dict(getattr(configuration, "api_key", None) or {})
    prefixes = dict(getattr(configuration, "api_key_prefix", None) or {})
    # The client's own key is "BearerToken" (older releases: "authorization").
    name = "BearerToken" if keys.get("BearerToken") else "authorization"
    auth, prefix = str(keys.get(name) or ""), prefixes.get(name)
    if prefix and auth and not auth.startswith(prefix):
        auth = f"{prefix} {auth}"
    return ClusterConfig(
        server=str(configuration.host).rstrip("/"),
        ca_file=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        cert_file=configuration.cert_file or None,
        key_file=configuration.key_file or None,
        token=auth.removeprefix("Bearer ").strip() or None,
    )


# -- credentials that change: token files and plugins -----------------------------------------


@dataclass(frozen=True)
class Credential:
    """What goes with a request now: a bearer token and/or a client certificate (PEM)."""

    token: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    expires: dt.datetime | None = None


class Credentials:
    """The current credential of a ``ClusterConfig``: static, a token file read again when it
    changes, or a plugin's answer kept until it expires. Thread-safe."""

    def __init__(self, config: ClusterConfig,
                 now: Any = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.config = config
        self._now = now
        self._lock = threading.Lock()
        self._file_token: tuple[tuple[int, int, int], str] | None = None
        self._plugin: Credential | None = None

    def current(self) -> Credential:
        with self._lock:
            if self.config.exec is not None:
                plugin = self._plugin
                if plugin is None or (plugin.expires is not None
                                      and plugin.expires - EXEC_EXPIRY_MARGIN <= self._now()):
                    plugin = self._plugin = run_plugin(self.config.exec)
                return plugin
            if self.config.token_file:
                return Credential(token=self._read_token_file(self.config.token_file))
            return Credential(token=self.config.token)

    def refresh(self) -> None:
        """After a 401: the next ``current`` reads the token file or asks the plugin again."""
        with self._lock:
            self._file_token = None
            self._plugin = None

    def _read_token_file(self, path: str) -> str:
        try:
            st = os.stat(path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._file_token is None or self._file_token[0] != stamp:
                self._file_token = (stamp, Path(path).read_text().strip())
        except OSError as exc:
            raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from None
        return self._file_token[1]


def run_plugin(plugin: ExecConfig) -> Credential:
    """Run an exec credential plugin and read its ExecCredential (non-interactively)."""
    spec: dict[str, Any] = {"interactive": False}
    if plugin.provide_cluster_info:
        spec["cluster"] = dict(plugin.cluster)
    request = {"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec}
    env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": json.dumps(request)}
    command = plugin.command if os.sep in plugin.command else shutil.which(
        plugin.command, path=env.get("PATH")) or plugin.command
    try:
        done = subprocess.run([command, *plugin.args], env=env, capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=EXEC_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"exec credential plugin {plugin.command}: {exc}") from None
    if done.returncode != 0:
        # Its stderr may say why (e.g. expired SSO); the first line only, never stdout.
        why = done.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise ConfigError(f"exec credential plugin {plugin.command} exited with "
                          f"{done.returncode}" + (f": {why[0][:300]}" if why else ""))
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise ConfigError(f"exec credential plugin {plugin.command} printed no JSON") from None
    if not isinstance(answer, dict) or answer.get("kind") != "ExecCredential" or answer.get(
            "apiVersion") != plugin.api_version:
        raise ConfigError(f"exec credential plugin {plugin.command} did not print an "
                          f"ExecCredential of {plugin.api_version}")
    status = answer.get("status") or {}
    token = status.get("token") or None
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if not token and not (cert and key):
        raise ConfigError(f"exec credential plugin {plugin.command} gave neither a token nor "
                          "a client certificate and key")
    expires = None
    if status.get("expirationTimestamp"):
        expires = dt.datetime.fromisoformat(str(status["expirationTimestamp"]).replace(
            "Z", "+00:00"))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
    return Credential(token=token, cert_data=cert.encode() if cert else None,
                      key_data=key.encode() if key else None, expires=expires)


_temp_files: list[str] = []


def _pem_file(data: bytes) -> str:
    """``ssl`` loads certificates and keys from files only: a private temporary one."""
    fd, name = tempfile.mkstemp(prefix="imagepatch-kube-", suffix=".pem")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if not _temp_files:
        atexit.register(_remove_temp_files)
    _temp_files.append(name)
    return name


def _remove_temp_files() -> None:
    for name in _temp_files:
        try:
            os.unlink(name)
        except OSError:
            pass


class ServerNameContext(ssl.SSLContext):
    """An ``SSLContext`` that sends ``tls_server_name`` as SNI and checks the certificate
    against it, whatever host the connection was made to (kubeconfig ``tls-server-name``).

    Every TLS connection of httpx (``wrap_socket``, and ``wrap_bio`` through a proxy) and of
    asyncio (``wrap_bio``: kopf's aiohttp session) passes through one of these two.
    """

    tls_server_name: str = ""

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        # (server_side, do_handshake_on_connect, suppress_ragged_eofs, server_hostname, ...)
        return super().wrap_socket(sock, *self._named(args, 3, kwargs), **kwargs)

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any,
                 **kwargs: Any) -> ssl.SSLObject:
        # (server_side, server_hostname, session)
        return super().wrap_bio(incoming, outgoing, *self._named(args, 1, kwargs), **kwargs)

    def _named(self, args: tuple[Any, ...], at: int, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """``args`` with the server name at position ``at`` (or in ``kwargs``) replaced."""
        if len(args) > at:
            return (*args[:at], self.tls_server_name or args[at], *args[at + 1:])
        kwargs["server_hostname"] = self.tls_server_name or kwargs.get("server_hostname")
        return args


def ssl_context(config: ClusterConfig, cert_data: bytes | None = None,
                key_data: bytes | None = None) -> ssl.SSLContext:
    """Verification against the cluster's CA (or none, if the kubeconfig says so), and the
    client certificate, if there is one; with ``tls-server-name``, against that name."""
    cadata = config.ca_data.decode() if config.ca_data else None
    if config.tls_server_name:
        # What ssl.create_default_context makes (Python 3.11), in the subclass.
        named = ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        named.tls_server_name = config.tls_server_name
        if config.ca_file or cadata:
            named.load_verify_locations(cafile=config.ca_file, cadata=cadata)
        else:
            named.load_default_certs(ssl.Purpose.SERVER_AUTH)
        context: ssl.SSLContext = named
    else:
        context = ssl.create_default_context(cafile=config.ca_file, cadata=cadata)
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert = config.cert_file or (_pem_file(config.cert_data) if config.cert_data else None)
    key = config.key_file or (_pem_file(config.key_data) if config.key_data else None)
    if cert_data and key_data:  # a plugin's, in place of the kubeconfig's
        cert, key = _pem_file(cert_data), _pem_file(key_data)
    if cert:
        context.load_cert_chain(cert, key)
    return context


# -- the client --------------------------------------------------------------------------------


def path(group: str, version: str, plural: str, *, namespace: str | None = None,
         name: str | None = None, subresource: str | None = None) -> str:
    """A resource's URL path: ``/api/v1/...`` for the core group, ``/apis/G/V/...`` else."""
    parts = ["/api", version] if group == CORE else ["/apis", group, version]
    if namespace is not None:
        parts += ["namespaces", quote(namespace, safe="")]
    parts.append(plural)
    if name is not None:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Client:
    """Requests to one API server with one set of credentials; safe to use from threads."""

    def __init__(self, config: ClusterConfig, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.timeout = timeout
        self.credentials = Credentials(config)
        self._transport = transport
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._http_cert: tuple[bytes | None, bytes | None] = (None, None)

    @classmethod
    def of(cls, something: Any = None) -> Client:
        """A ``Client``; a ``ClusterConfig``; a ``kubernetes.client.ApiClient`` (its
        configuration); or None: ``load()``."""
        if isinstance(something, Client):
            return something
        if isinstance(something, ClusterConfig):
            return cls(something)
        if something is None:
            return cls(load())
        if hasattr(something, "configuration"):
            return cls(from_client_configuration(something.configuration))
        raise TypeError(f"not a Kubernetes API client: {type(something).__name__}")

    def connection(self) -> dict[str, Any]:
        """The endpoint and current credential as ``kopf.ConnectionInfo`` keywords."""
        cfg, cred = self.config, self.credentials.current()
        info: dict[str, Any] = {
            "server": cfg.server, "insecure": cfg.insecure or None,
            "default_namespace": cfg.namespace, "expiration": cred.expires,
        }
        if cfg.proxy_url:
            info["proxy_url"] = cfg.proxy_url
        if cfg.ca_file:
            info["ca_path"] = cfg.ca_file
        if cfg.ca_data:
            info["ca_data"] = cfg.ca_data
        if cred.token:
            info.update(scheme="Bearer", token=cred.token)
        if cred.cert_data and cred.key_data:
            info.update(certificate_data=cred.cert_data, private_key_data=cred.key_data)
        else:
            if cfg.cert_file or cfg.cert_data:
                info.update(certificate_path=cfg.cert_file, certificate_data=cfg.cert_data)
            if cfg.key_file or cfg.key_data:
                info.update(private_key_path=cfg.key_file, private_key_data=cfg.key_data)
        return {k: v for k, v in info.items() if v is not None}

    def _client(self, cred: Credential) -> httpx.Client:
        with self._lock:
            wanted = (cred.cert_data, cred.key_data)
            if self._http is None or wanted != self._http_cert:
                old, self._http = self._http, httpx.Client(
                    base_url=self.config.server,
                    verify=ssl_context(self.config, *wanted) if self._transport is None else True,
                    transport=self._transport,
                    # The kubeconfig's proxy, or none: kubectl ignores HTTPS_PROXY then too.
                    proxy=self.config.proxy_url if self._transport is None else None,
                    limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
                    headers={"Accept": "application/json", "User-Agent": "imagepatch"},
                )
                self._http_cert = wanted
                if old is not None:
                    old.close()
            return self._http

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def request(self, method: str, url: str, *, params: Mapping[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                timeout: float | None = None) -> dict[str, Any]:
        """One request; the answer's JSON object. ``ApiError`` for an error status,
        ``httpx.TransportError`` for no answer (``timeout`` covers connect, each read and
        write)."""
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        content = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            cred = self.credentials.current()
            headers = {"Content-Type": content_type} if content is not None else {}
            if cred.token:
                headers["Authorization"] = f"Bearer {cred.token}"
            response = self._client(cred).request(
                method, url, params=query, content=content, headers=headers,
                timeout=self.timeout if timeout is None else timeout)
            if response.status_code == 401 and attempt == 1 and (
                    self.config.exec or self.config.token_file):
                self.credentials.refresh()  # a rotated token file, an expired plugin token
                continue
            break
        # One line per request, as the kubernetes client's urllib3 wrote it (tests read
        # the log for RBAC denials): the path, never a header or a body.
        log.debug('%s "%s %s HTTP/1.1" %d', self.config.server, method,
                  response.request.url.raw_path.decode(), response.status_code)
        if response.status_code >= 400:
            raise _api_error(response)
        doc: dict[str, Any] = response.json() if response.content else {}
        return doc

    # Verbs, for readability at call sites.

    def get(self, url: str, **params: Any) -> dict[str, Any]:
        timeout = params.pop("timeout", None)
        return self.request("GET", url, params=params, timeout=timeout)

    def list_pages(self, url: str, *, limit: int, timeout: float | None = None,
                   **params: Any) -> Iterator[dict[str, Any]]:
        """Each page of a list (``limit`` items at most), following ``continue`` tokens."""
        token = ""
        while True:
            page = self.request("GET", url, params={**params, "limit": limit,
                                                    "continue": token}, timeout=timeout)
            token = (page.get("metadata") or {}).get("continue") or ""
            yield page
            if not token:
                return

    def create(self, url: str, body: Any, *, timeout: float | None = None) -> dict[str, Any]:
        return self.request("POST", url, body=body, timeout=timeout)

    def replace(self, url: str, body: Any, *, timeout: float | None = None) -> dict[str, Any]:
        return self.request("PUT", url, body=body, timeout=timeout)

    def patch(self, url: str, body: Any, *, content_type: str = MERGE_PATCH,
              timeout: float | None = None) -> dict[str, Any]:
        return self.request("PATCH", url, body=body, content_type=content_type, timeout=timeout)

    def delete(self, url: str, body: Any = None, *, timeout: float | None = None,
               **params: Any) -> dict[str, Any]:
        return self.request("DELETE", url, body=body, params=params, timeout=timeout)


def _api_error(response: httpx.Response) -> ApiError:
    message, reason = "", ""
    try:
        doc = response.json()
        if isinstance(doc, dict):
            message, reason = str(doc.get("message") or ""), str(doc.get("reason") or "")
    except ValueError:
        pass
    retry = response.headers.get("Retry-After")
    return ApiError(response.status_code, message, reason=reason,
                    retry_after=float(retry) if retry and retry.isdigit() else None)
