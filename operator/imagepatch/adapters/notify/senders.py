"""Send one rendered notification to one sink: an HTTP POST, or an SNS Publish.

Each failure is classified once, here, as an adapter error
(``adapters/errors.py``): a 429, a 5xx, a timeout or a refused connection is
:class:`TransientError` (the notifier retries it with back-off), anything
else a person must fix, :class:`ConfigurationError` (a missing Secret or
key, a URL that is not http(s), a 4xx from the receiver, an AWS access
denial).

Messages never hold a URL, a token or a response body: a Slack or Teams
webhook URL *is* its credential. They name the sink, its type, the Secret
and the HTTP status or exception class only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import boto3
import httpx

from imagepatch.adapters.aws import ErrorRules, classified, client_config
from imagepatch.adapters.errors import AdapterError, ConfigurationError, TransientError
from imagepatch.core import notify
from imagepatch.core.reasons import (
    NOTIFICATION_REJECTED,
    NOTIFICATION_SECRET_UNUSABLE,
    NOTIFICATION_UNAVAILABLE,
)
from imagepatch.model.policy import NotificationSink, SinkType

# A receiver that does not answer within this long is retried later.
HTTP_TIMEOUT = 10.0
# botocore's own attempts per Publish: the notifier retries on top of them.
SNS_ATTEMPTS = 2
_USER_AGENT = "imagepatch-notifier"
_RETRY_AFTER_CAP = 60.0


class SecretReader(Protocol):
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def _secret_value(secret: Mapping[str, Any], key: str) -> str:
    raw = (secret.get("data") or {}).get(key)
    if not raw:
        return ""
    return base64.b64decode(raw).decode().strip()


class Senders:
    """The senders of every sink type, sharing one HTTP client and the SNS clients."""

    def __init__(self, secrets: SecretReader, namespace: str, *,
                 session: boto3.Session | None = None, http_timeout: float = HTTP_TIMEOUT) -> None:
        self.secrets = secrets
        self.namespace = namespace
        self._http = httpx.AsyncClient(timeout=http_timeout, follow_redirects=False,
                                       headers={"User-Agent": _USER_AGENT})
        self._session = session
        self._sns: dict[str, Any] = {}
        self._lock = threading.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, sink: NotificationSink, note: notify.Notification) -> None:
        """Deliver ``note`` to ``sink`` once; raise an adapter error when it was not."""
        if sink.type == SinkType.SNS:
            params = notify.sns_publish(note)
            await asyncio.to_thread(self._publish, sink, params)
            return
        address, token = await self._read_secret(sink)
        headers = {"Content-Type": "application/json"}
        if sink.type == SinkType.WEBHOOK:
            body = notify.webhook_payload(note)
            headers["X-Signature"] = notify.signature(body, token.encode())
        else:
            body = json.dumps(notify.render(sink.type, note)).encode()
        await self._post(sink, address, body, headers)

    async def _read_secret(self, sink: NotificationSink) -> tuple[str, str]:
        where = f"Secret {self.namespace}/{sink.secret_name}"
        try:
            secret = await self.secrets.get_secret(self.namespace, sink.secret_name)
        except AdapterError as exc:
            raise ConfigurationError(f"{where} could not be read ({exc.reason})",
                                     reason=NOTIFICATION_SECRET_UNUSABLE) from None
        if secret is None:
            raise ConfigurationError(f"{where} not found", reason=NOTIFICATION_SECRET_UNUSABLE)
        try:
            address = _secret_value(secret, "address")
            token = _secret_value(secret, "token")
        except ValueError:  # not base64, or not UTF-8
            raise ConfigurationError(f"{where} holds a value that is not text",
                                     reason=NOTIFICATION_SECRET_UNUSABLE) from None
        if not address:
            raise ConfigurationError(f"{where} has no key 'address' (the URL)",
                                     reason=NOTIFICATION_SECRET_UNUSABLE)
        try:
            scheme = httpx.URL(address).scheme
        except httpx.InvalidURL:
            scheme = ""
        if scheme not in ("http", "https"):
            raise ConfigurationError(f"{where}: key 'address' is not an http(s) URL",
                                     reason=NOTIFICATION_SECRET_UNUSABLE)
        if sink.type == SinkType.WEBHOOK and not token:
            raise ConfigurationError(f"{where} has no key 'token' (the HMAC key a Webhook "
                                     "sink signs with)", reason=NOTIFICATION_SECRET_UNUSABLE)
        return address, token

    async def _post(self, sink: NotificationSink, address: str, body: bytes,
                    headers: Mapping[str, str]) -> None:
        what = f"{sink.type} sink {sink.name!r}"
        try:
            response = await self._http.post(address, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            # The exception's text can hold the URL: name its class only.
            raise TransientError(f"{what} could not be reached ({type(exc).__name__})",
                                 reason=NOTIFICATION_UNAVAILABLE) from None
        code = response.status_code
        if 200 <= code < 300:
            return
        if code in (408, 429) or code >= 500:
            raise TransientError(f"{what} answered HTTP {code}", reason=NOTIFICATION_UNAVAILABLE,
                                 retry_after=_retry_after(response.headers.get("Retry-After")))
        raise ConfigurationError(f"{what} refused the message with HTTP {code}",
                                 reason=NOTIFICATION_REJECTED)

    # -- SNS (blocking: in a worker thread) ------------------------------------------

    def _client(self, region: str) -> Any:
        # boto3 sessions are not thread-safe; the clients are made in worker threads.
        with self._lock:
            if region not in self._sns:
                if self._session is None:
                    self._session = boto3.Session()
                self._sns[region] = self._session.client(
                    "sns", region_name=region, config=client_config(SNS_ATTEMPTS))
            return self._sns[region]

    def _publish(self, sink: NotificationSink, params: Mapping[str, str]) -> None:
        # arn:aws:sns:<region>:<account>:<topic>: the topic's own region.
        region = sink.topic_arn.split(":")[3]
        with classified("sns:Publish", f"topic {sink.topic_arn.rsplit(':', 1)[-1]!r}", region,
                        _RULES):
            client = self._client(region)
            client.publish(TopicArn=sink.topic_arn, **params)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return min(max(float(value), 0.0), _RETRY_AFTER_CAP)
    return None


_RULES = ErrorRules(
    rejected_codes=frozenset({"InvalidParameter", "InvalidParameterValue", "NotFound",
                              "AuthorizationError", "KMSAccessDenied", "KMSDisabled"}),
    access_advice="allow sns:Publish on the topic to the operator's IAM role "
    "(EKS Pod Identity or IRSA)",
    # botocore's text can quote the message: name the class only.
    invalid_request="{action} on {where} was refused by botocore's parameter validation",
)
