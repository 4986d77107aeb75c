"""Consume ECR and Inspector2 events from an SQS queue and hand their image signals on.

An EventBridge rule (``source: ["aws.ecr", "aws.inspector2"]``) targets an
SQS queue. :class:`SqsEventSource` long-polls that queue, turns each message
into :class:`~imagepatch.core.events.ImageSignal` values with
``core/events.py`` (pure), and awaits the caller's ``on_signals`` with the
signals of each received batch. Neighbours: the operator's startup wires
``on_signals`` to the reconciler, which re-evaluates just the images named;
the reconciler's timer is the fallback for every event that never comes
(EventBridge delivers AWS service events on a best-effort basis).

Delivery is at least once, end to end:

* a message is deleted only after ``on_signals`` returned for its batch, so
  a failure there (or a crash) leaves it to come back after the queue's
  visibility timeout; the reconciler is level-based, so a signal handled
  twice does no harm. Give the queue a redrive policy (a dead-letter queue
  with a ``maxReceiveCount``) so a message that always fails ends there;
* a malformed message is logged (its id, what is wrong, and the start of its
  body; never its receipt handle, which is the capability to delete it) and
  deleted at once: redelivering it cannot make it parse;
* a well-formed event about no image (a deletion, a failed push, an EC2
  finding) is deleted without a call.

Failures to receive never end :meth:`SqsEventSource.run`. They are classified
once, by ``adapters/aws.py``'s classifier with SQS's own codes and advice
added here, into the errors of ``adapters/errors.py``: a
:class:`~imagepatch.adapters.errors.TransientError` (throttling, 5xx,
connection failures) backs off exponentially with jitter, capped; a
:class:`~imagepatch.adapters.errors.ConfigurationError` (the queue does not
exist, access denied, bad credentials) waits much longer (60 s by default),
since only a person can fix it. Each distinct error is logged once, as a
warning or an error, until a receive succeeds again; ``last_error`` holds
the latest for a status or health check. botocore's *standard* retry mode
retries throttling and 5xx inside each call first (``total_max_attempts``,
as for every AWS adapter). Messages name the operation, the queue and
the error code, never AWS's message text or anything of the credentials.

Stopping: ``run`` checks ``stop`` between polls and while backing off. A
receive already in flight (a long poll, at most ``wait_seconds``) is allowed
to finish, because a thread cannot be interrupted; whatever it brought back
after ``stop`` is made visible again at once rather than handled, so the
next consumer gets it without waiting out the visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import boto3

from imagepatch.adapters.aws import (
    ACCESS_DENIED_CODES,
    AWS_UNAVAILABLE,
    INVALID_CREDENTIAL_CODES,
    ClientFailure,
    ErrorRules,
    classified,
    client_config,
)
from imagepatch.adapters.errors import AdapterError, NotFoundError, TransientError
from imagepatch.core.events import ImageSignal, MalformedEvent, parse_message
from imagepatch.core.reasons import (
    EVENT_QUEUE_NOT_FOUND,
)

__all__ = [
    "EVENT_QUEUE_NOT_FOUND",
    "OnSignals",
    "SqsEventSource",
]

log = logging.getLogger(__name__)

OnSignals = Callable[[tuple[ImageSignal, ...]], Awaitable[None]]

# Attempts per call, the first included (botocore's total_max_attempts). The
# consumer loop retries forever on its own, so botocore needs only to ride out
# a short burst; more would only delay a stop.
DEFAULT_MAX_ATTEMPTS = 3
# Backoff after a transient receive failure: 1, 2, 4, ... s, capped, with
# "equal jitter" (half fixed, half random) so a dead endpoint is never polled
# in a tight loop and several consumers do not retry in step.
_TRANSIENT_BASE = 1.0
DEFAULT_TRANSIENT_BACKOFF_MAX = 30.0
# After a configuration error a person must act; polling faster only fills logs.
DEFAULT_CONFIGURATION_BACKOFF = 60.0
# A long poll holds the response for up to WaitTimeSeconds; the read timeout
# must outlast it, or every quiet poll would end as a timeout.
_READ_TIMEOUT_MARGIN = 10
# How much of a malformed body a log line may show.
_PREVIEW = 160

# Error codes, as SQS's JSON protocol reports them (Code) and as its older
# query protocol did (QueryErrorCode, which botocore also keeps), added to
# (or, for throttling and the AWS side, instead of) adapters/aws.py's.
_QUEUE_MISSING_CODES = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
_ACCESS_DENIED_CODES = ACCESS_DENIED_CODES | {
    # An encrypted queue whose key the role may not use.
    "KMS.AccessDeniedException",
    "KmsAccessDenied",
    "KMS.DisabledException",
    "KmsDisabled",
    "KMS.NotFoundException",
    "KmsNotFound",
    "KMS.InvalidStateException",
    "KmsInvalidState",
}
_INVALID_CREDENTIAL_CODES = INVALID_CREDENTIAL_CODES | {"InvalidSecurity"}
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "KMS.ThrottlingException",
        "KmsThrottled",
        # Too many messages in flight (120,000 on a standard queue): it drains.
        "OverLimit",
    }
)
_SERVER_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable"})


class SqsEventSource:
    """Long-polls one SQS queue for ECR and Inspector2 events.

    ``queue_url`` is the queue's URL (``https://sqs.<region>.amazonaws.com/
    <account>/<name>``). ``session`` defaults to a new ``boto3.Session`` (the
    default credential chain: EKS Pod Identity or IRSA in a cluster);
    ``endpoint_url`` points the client elsewhere (moto in tests).
    ``wait_seconds`` is the long-poll time (1-20 s; it also bounds how long a
    stop waits), ``max_messages`` the batch size (1-10), and
    ``visibility_timeout`` overrides the queue's own for received messages,
    which is how long a message whose handling failed stays hidden.

    Counters, for metrics and tests: ``polls`` (receives that returned),
    ``received`` (messages), ``handled`` (messages whose signals
    ``on_signals`` took), ``ignored`` (well-formed events about no image),
    ``dropped_malformed``, and ``errors`` (failed receives, failed
    ``on_signals`` calls, and messages that could not be deleted).
    """

    def __init__(
        self,
        queue_url: str,
        *,
        region: str | None,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        wait_seconds: int = 10,
        max_messages: int = 10,
        visibility_timeout: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        transient_backoff_max: float = DEFAULT_TRANSIENT_BACKOFF_MAX,
        configuration_backoff: float = DEFAULT_CONFIGURATION_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        if not queue_url:
            raise ValueError("queue_url is empty")
        # SQS's own limits; 0 would turn long polling into a busy loop.
        if not 1 <= wait_seconds <= 20:
            raise ValueError(f"wait_seconds must be 1-20, not {wait_seconds}")
        if not 1 <= max_messages <= 10:
            raise ValueError(f"max_messages must be 1-10, not {max_messages}")
        if visibility_timeout is not None and not 0 <= visibility_timeout <= 43_200:
            raise ValueError(f"visibility_timeout must be 0-43200, not {visibility_timeout}")
        self.queue_url = queue_url
        # The last path segment: enough to name the queue in a log line.
        self.queue_name = queue_url.rstrip("/").rsplit("/", 1)[-1]
        self.wait_seconds = wait_seconds
        self.max_messages = max_messages
        self.visibility_timeout = visibility_timeout
        self._region = region
        self._endpoint_url = endpoint_url
        self._session = session
        self._config = client_config(max_attempts, read_timeout=wait_seconds + _READ_TIMEOUT_MARGIN)
        self._transient_backoff_max = transient_backoff_max
        self._configuration_backoff = configuration_backoff
        self._rng = rng or random.Random()
        self._client: Any = None
        self._lock = threading.Lock()

        self.polls = 0
        self.received = 0
        self.handled = 0
        self.ignored = 0
        self.dropped_malformed = 0
        self.errors = 0
        self.last_error: AdapterError | None = None

    def __repr__(self) -> str:
        return f"SqsEventSource({self.queue_name!r})"

    @property
    def sqs(self) -> Any:
        """The SQS client, made on first use (exposed so tests can attach hooks)."""
        # boto3 sessions are not thread-safe, and the client is made in a
        # worker thread: serialise it.
        with self._lock:
            if self._client is None:
                with _classified("CreateClient", self.queue_name):
                    if self._session is None:
                        self._session = boto3.Session()
                    self._client = self._session.client(
                        "sqs",
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=self._config,
                    )
            return self._client

    # -- the loop --------------------------------------------------------------------

    async def run(self, on_signals: OnSignals, *, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; never raises for a failed receive or handler.

        ``on_signals`` is awaited once per received batch that names at least
        one image, with the batch's signals (in message order, without
        repeats). If it raises, the batch's messages stay on the queue.
        """
        failures = 0  # consecutive failed receives
        reported: set[tuple[str, str]] = set()  # errors logged in this streak
        log.info("Consuming image events from SQS queue %r", self.queue_name)
        while not stop.is_set():
            try:
                messages = await asyncio.to_thread(self._receive)
            except Exception as exc:
                # Anything botocore did not wrap (or our own bug) goes on as a
                # transient failure, with its traceback logged once.
                error = exc if isinstance(exc, AdapterError) else self._unexpected(exc)
                failures += 1
                self.errors += 1
                self.last_error = error
                delay = self._backoff(error, failures)
                self._report(error, reported, delay, exc_info=None if error is exc else exc)
                await _wait(stop, delay)
                continue
            self.polls += 1
            if failures:
                log.info(
                    "Receiving from SQS queue %r again after %d failed attempt(s)",
                    self.queue_name,
                    failures,
                )
                failures = 0
                reported.clear()
                self.last_error = None
            if not messages:
                continue
            if stop.is_set():
                await asyncio.to_thread(self._release, messages)
                break
            await self._handle(messages, on_signals)
        log.info("Stopped consuming image events from SQS queue %r", self.queue_name)

    async def _handle(self, messages: Sequence[dict[str, Any]], on_signals: OnSignals) -> None:
        self.received += len(messages)
        finished: list[dict[str, Any]] = []  # to delete whatever on_signals does
        carrying: list[dict[str, Any]] = []  # to delete once on_signals took them
        signals: list[ImageSignal] = []
        for message in messages:
            found = self._parse(message)
            if found is None:
                self.dropped_malformed += 1
                finished.append(message)
            elif not found:
                self.ignored += 1
                finished.append(message)
            else:
                carrying.append(message)
                signals.extend(found)
        if carrying:
            batch = tuple(dict.fromkeys(signals))
            try:
                await on_signals(batch)
            except Exception as exc:
                # Leave the messages: they come back after the visibility
                # timeout, and the dead-letter queue catches one that never
                # succeeds. Our own adapter errors are safe to quote; anything
                # else is a bug, so its traceback is logged too.
                self.errors += 1
                log.warning(
                    "Handling %d image signal(s) from %d message(s) of SQS queue %r failed "
                    "(%s: %s); they will be redelivered (receive counts %s)",
                    len(batch),
                    len(carrying),
                    self.queue_name,
                    type(exc).__name__,
                    exc,
                    ", ".join(_receive_count(m) for m in carrying),
                    exc_info=not isinstance(exc, AdapterError),
                )
            else:
                self.handled += len(carrying)
                finished.extend(carrying)
        if finished:
            self.errors += await asyncio.to_thread(self._delete, finished)

    def _parse(self, message: dict[str, Any]) -> tuple[ImageSignal, ...] | None:
        """The message's signals, or None (logged) if it is to be dropped as malformed."""
        body = message.get("Body")
        try:
            if not isinstance(body, str):
                raise MalformedEvent("message has no body")
            return parse_message(body)
        except MalformedEvent as exc:
            problem = exc.reason
            trace = False
        except Exception as exc:
            # The parser is pure and should raise nothing else; if it does,
            # that is our bug, and retrying the same body would hit it again.
            problem = f"{type(exc).__name__} while parsing"
            trace = True
        log.warning(
            "Dropping malformed message %s from SQS queue %r: %s; body starts %s",
            message.get("MessageId", "?"),
            self.queue_name,
            problem,
            _preview(body),
            exc_info=trace,
        )
        return None

    def _unexpected(self, exc: Exception) -> TransientError:
        return TransientError(
            f"sqs:ReceiveMessage on queue {self.queue_name!r} failed unexpectedly "
            f"({type(exc).__name__})",
            reason=AWS_UNAVAILABLE,
        )

    def _backoff(self, error: AdapterError, failures: int) -> float:
        if isinstance(error, TransientError):
            ceiling: float = min(
                self._transient_backoff_max, _TRANSIENT_BASE * 2 ** (failures - 1)
            )
            delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
            return max(delay, error.retry_after or 0.0)
        return self._configuration_backoff * self._rng.uniform(0.9, 1.1)

    def _report(
        self,
        error: AdapterError,
        reported: set[tuple[str, str]],
        delay: float,
        *,
        exc_info: BaseException | None = None,
    ) -> None:
        key = (error.reason, error.message)
        if key in reported:
            log.debug("Receiving from SQS queue %r still fails: %s", self.queue_name, error)
            return
        reported.add(key)
        log.log(
            logging.WARNING if isinstance(error, TransientError) else logging.ERROR,
            "Cannot receive image events from SQS queue %r (%s): %s; retrying every %.0f s or so "
            "(the timer still re-evaluates images meanwhile)",
            self.queue_name,
            error.reason,
            error,
            delay,
            exc_info=exc_info,
        )

    # -- calls (in a worker thread) --------------------------------------------------

    def _receive(self) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": self.max_messages,
            "WaitTimeSeconds": self.wait_seconds,
            # Logged when handling fails, to show a message coming back.
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if self.visibility_timeout is not None:
            params["VisibilityTimeout"] = self.visibility_timeout
        with _classified("ReceiveMessage", self.queue_name):
            return self.sqs.receive_message(**params).get("Messages") or []

    def _delete(self, messages: Sequence[dict[str, Any]]) -> int:
        """Delete the messages; the number that could not be (they come back)."""
        entries = _entries(messages)
        try:
            with _classified("DeleteMessageBatch", self.queue_name):
                response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except AdapterError as exc:
            log.warning(
                "Could not delete %d handled message(s) from SQS queue %r (%s); "
                "they will be redelivered and handled again",
                len(entries),
                self.queue_name,
                exc,
            )
            return len(entries)
        failed = response.get("Failed") or ()
        for failure in failed:
            log.warning(
                "Could not delete a handled message from SQS queue %r (%s); "
                "it will be redelivered and handled again",
                self.queue_name,
                failure.get("Code", "unknown error"),
            )
        return len(failed)

    def _release(self, messages: Sequence[dict[str, Any]]) -> None:
        """Make messages received after a stop visible again, for the next consumer."""
        entries = [dict(entry, VisibilityTimeout=0) for entry in _entries(messages)]
        try:
            with _classified("ChangeMessageVisibilityBatch", self.queue_name):
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        except AdapterError as exc:
            # Harmless: they reappear when their visibility timeout ends.
            log.info("Could not release %d message(s) on stop: %s", len(entries), exc)


# -- helpers ----------------------------------------------------------------------------


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep for ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _entries(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    # Batch entry ids only need to be unique within the call.
    return [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]


def _receive_count(message: dict[str, Any]) -> str:
    return str((message.get("Attributes") or {}).get("ApproximateReceiveCount", "?"))


def _preview(body: Any) -> str:
    if not isinstance(body, str):
        return repr(body)[:_PREVIEW]
    if len(body) <= _PREVIEW:
        return repr(body)
    return f"{body[:_PREVIEW]!r}... ({len(body)} characters)"


def _queue_missing(failure: ClientFailure) -> NotFoundError:
    return NotFoundError(
        f"SQS {failure.where} does not exist, or not in this account and region: "
        "check the event queue URL",
        reason=EVENT_QUEUE_NOT_FOUND,
    )


# What SQS adds to adapters/aws.py's classification. Its messages quote no
# request id.
_NOT_COMPLETED = "{action} on {where} could not be completed ({error})"
_RULES = ErrorRules(
    service_codes=dict.fromkeys(_QUEUE_MISSING_CODES, _queue_missing),
    access_denied_codes=_ACCESS_DENIED_CODES,
    invalid_credential_codes=_INVALID_CREDENTIAL_CODES,
    throttling_codes=_THROTTLING_CODES,
    server_codes=_SERVER_CODES,
    query_error_codes=True,
    request_ids=False,
    region_hint="set the event queue's region or AWS_REGION",
    access_advice=(
        "allow sqs:ReceiveMessage, sqs:DeleteMessage and sqs:ChangeMessageVisibility on the "
        "queue (and kms:Decrypt on its key, if encrypted) to the operator's IAM role"
    ),
    expired_advice="check that the operator pod's web identity token is mounted and refreshed",
    # botocore's text can quote parameter values, receipt handles among them
    # (each one the right to delete a message): name the class only.
    invalid_request=(
        "{action} on {where} was refused by botocore's parameter validation "
        "(check the queue URL and the consumer's settings)"
    ),
    # Connection refused or reset, timeouts, retries exhausted.
    unreachable=_NOT_COMPLETED,
    botocore_failed=_NOT_COMPLETED,
)


def _classified(operation: str, queue: str) -> contextlib.AbstractContextManager[None]:
    """botocore's exceptions as adapter errors (see adapters/aws.py), about ``queue``."""
    return classified(f"sqs:{operation}", f"queue {queue!r}", None, _RULES)
