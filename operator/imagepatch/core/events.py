"""Turn one SQS message holding an EventBridge event into the images it concerns.

The operator re-evaluates an image at once when ECR or Inspector2 says
something changed about it; a timer is the fallback for every event that is
lost, late or never sent (EventBridge delivers AWS service events on a *best
effort* basis). This module is the pure half of that: :func:`parse_message`
takes an SQS message body and returns a tuple of :class:`ImageSignal` (which
image, and what happened to it). The adapter ``adapters/events.py`` polls the
queue and hands the signals to the reconciler, which re-evaluates the
affected images from observed state: a signal is a hint to look now, never a
fact to act on, so duplicates and stale events do no harm.

What is recognised, and the shapes relied on (from the ECR user guide,
"Amazon ECR events and EventBridge" and "EventBridge events sent for enhanced
scanning", and the Inspector user guide, "EventBridge event schema for Amazon
Inspector events"); every event has the EventBridge envelope ``version``,
``id``, ``detail-type``, ``source``, ``account``, ``time``, ``region``,
``resources`` and ``detail``:

* ``aws.ecr`` / ``ECR Image Action``: ``detail.action-type`` ``PUSH`` with
  ``detail.result`` ``SUCCESS`` is a ``push`` signal for
  ``repository-name``, ``image-digest`` and ``image-tag`` (absent or empty
  for a push by digest). A missing, malformed or placeholder digest (AWS's
  published sample events carry 60-hex-digit ones) leaves the signal's
  ``digest`` None; the event is never dropped for it. Any other action (``DELETE``) or result
  (``FAILED``) is valid but irrelevant: ``()``.
* ``aws.ecr`` / ``ECR Image Scan`` (basic scanning): a ``scan`` signal for
  ``repository-name``, ``image-digest`` and ``image-tags``, whatever the
  ``scan-status``: a ``FAILED`` scan changes what the image's evaluation
  shows as much as a ``COMPLETE`` one. ``finding-severity-counts`` is not
  used; the findings are read afresh, because the counts alone cannot be
  judged against a baseline (ignore list, fix availability, age).
* ``aws.inspector2`` / ``Inspector2 Finding``: a ``finding`` signal for each
  ``detail.resources[]`` of type ``AWS_ECR_CONTAINER_IMAGE``, from
  ``details.awsEcrContainerImage.{registry, repositoryName, imageHash,
  imageTags}``. Findings on EC2 instances or Lambda functions are ``()``.
  Any ``status`` counts, since a ``CLOSED`` finding can make an image
  compliant again. ``registry`` (the image's account) is preferred to the
  envelope's ``account``: a delegated Inspector administrator receives
  findings for its member accounts' images.
* ``aws.inspector2`` / ``Inspector2 Scan`` (enhanced scanning's initial
  scan): a ``scan`` signal for ``detail.image-digest`` and
  ``detail.image-tags``. Its ``detail.repository-name`` is, unlike ECR's, a
  repository **ARN** (``arn:aws:ecr:us-east-2:123456789012:repository/a/b``),
  so it is read as an ARN when it is one (account and region then come from
  it) and as a plain name otherwise; without it, an ECR repository ARN in
  ``resources`` names the repository. A scan of a non-ECR resource is ``()``.

Every other ``aws.ecr`` or ``aws.inspector2`` detail-type (replication,
pull-through cache, referrers, scan-frequency and coverage changes), and any
other well-formed event, is ``()``. A body that is not an EventBridge event,
or an event of the kinds above with a missing or invalid field, raises
:class:`MalformedEvent`: the consumer logs and drops it, since redelivering
it cannot make it parse.

A message published to an SNS topic that fans out to the queue arrives
wrapped (``{"Type": "Notification", "Message": "<the event as JSON>"}``)
unless the subscription has raw message delivery on; both are accepted.

Tags: a scan or finding can name several tags of one image. One signal is
returned per tag (in the event's order, without repeats), or one tagless
signal if there are none, so a caller matching workloads by tag misses none.

Registry host: ``<account>.dkr.ecr.<region>.amazonaws.com``
(``.amazonaws.com.cn`` in the China regions), the name workloads pull from,
so a signal compares directly with an ``ImageRef``'s host.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from imagepatch.core.images import is_digest

__all__ = [
    "ECR_SOURCE",
    "INSPECTOR_SOURCE",
    "ImageSignal",
    "MalformedEvent",
    "SignalKind",
    "ecr_registry_host",
    "parse_event",
    "parse_message",
]

SignalKind = Literal["push", "scan", "finding"]

ECR_SOURCE = "aws.ecr"
INSPECTOR_SOURCE = "aws.inspector2"

# ECR's own constraints (API reference, CreateRepository and PutImage): a
# repository name is 2-256 characters of lower-case path components; a tag is
# up to 300 characters. Checked here so that nothing a queue can carry
# reaches the reconciler as a name it would then quote or look up.
_REPOSITORY_RE = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
_REPOSITORY_MAX = 256
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,299}")
_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+")
# arn:<partition>:ecr:<region>:<account>:repository/<name>[/sha256:<hex>]
_ECR_ARN_RE = re.compile(
    r"arn:aws(?:-[a-z]+)*:ecr:(?P<region>[^:]+):(?P<account>[^:]+):repository/(?P<rest>.+)"
)
# An SQS message holds at most 256 KiB; anything longer did not come from one.
_MAX_BODY = 262_144
# SNS also sends these to a subscribed queue (a cross-account subscription
# must be confirmed): well-formed, and about no image.
_SNS_CONTROL_TYPES = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})


class MalformedEvent(ValueError):
    """A message that is not a usable event; ``reason`` says what is wrong.

    ``reason`` names the field and the problem, never the field's value beyond
    a short, quoted prefix, so it is safe to log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ImageSignal:
    """Something happened to an ECR image: look at it again now.

    ``kind`` is ``push`` (a new image or tag), ``scan`` (a scan finished) or
    ``finding`` (an Inspector finding was created, updated or closed).
    ``digest`` is the image's manifest digest, or None when the event carried
    none or a malformed or placeholder one (AWS's published samples do): the
    repository and tag are still worth re-resolving. ``tag``
    is one tag of the image, if the event named any. ``at`` is the event's
    time, as EventBridge stamped it.
    """

    kind: SignalKind
    registry_host: str
    repository: str
    digest: str | None = None
    tag: str | None = None
    at: dt.datetime | None = None

    @property
    def name(self) -> str:
        """``host/repository``, as :attr:`ImageRef.name` spells it."""
        return f"{self.registry_host}/{self.repository}"


def ecr_registry_host(account: str, region: str) -> str:
    """The private registry host of ``account`` in ``region``."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}"


# -- entry points -------------------------------------------------------------------


def parse_message(body: str | bytes) -> tuple[ImageSignal, ...]:
    """The signals in one SQS message body (an event, or an SNS-wrapped one).

    Returns ``()`` for a well-formed event that concerns no image (another
    source, a deletion, a failed push, an EC2 finding). Raises
    :class:`MalformedEvent` for anything that is not a well-formed event.
    """
    document = _loads(body, what="message body")
    if isinstance(document, Mapping) and document.get("Type") in _SNS_CONTROL_TYPES:
        return ()
    if isinstance(document, Mapping) and document.get("Type") == "Notification":
        # SNS envelope: the event is the JSON string in Message. One level
        # only: SNS never wraps its own notifications twice.
        message = document.get("Message")
        if not isinstance(message, str):
            raise MalformedEvent("SNS notification has no Message string")
        document = _loads(message, what="SNS Message")
    if not isinstance(document, Mapping):
        raise MalformedEvent(f"body is a JSON {type(document).__name__}, not an event object")
    return parse_event(document)


def parse_event(event: Mapping[str, Any]) -> tuple[ImageSignal, ...]:
    """The signals in one decoded EventBridge event (see the module docstring)."""
    source = event.get("source")
    detail_type = event.get("detail-type")
    if not isinstance(source, str) or not source:
        raise MalformedEvent("event has no 'source'")
    if not isinstance(detail_type, str) or not detail_type:
        raise MalformedEvent("event has no 'detail-type'")
    parser = _PARSERS.get((source, detail_type))
    if parser is None:
        return ()
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise MalformedEvent(f"{detail_type!r} event has no 'detail' object")
    envelope = _Envelope(
        detail_type=detail_type,
        account=event.get("account"),
        region=event.get("region"),
        resources=event.get("resources"),
        at=_event_time(event.get("time")),
    )
    return tuple(dict.fromkeys(parser(envelope, detail)))


# -- per event type -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Envelope:
    detail_type: str
    account: Any
    region: Any
    resources: Any
    at: dt.datetime | None


def _ecr_image_action(env: _Envelope, detail: Mapping[str, Any]) -> Iterator[ImageSignal]:
    if _text(detail, "action-type", env) != "PUSH":
        return  # DELETE, and whatever ECR adds later
    if _text(detail, "result", env) != "SUCCESS":
        return  # a failed push changed nothing
    host = _host(detail.get("registry-id") or env.account, env.region, env)
    repository = _repository(detail.get("repository-name"), "detail.repository-name", env)
    digest = _digest(detail.get("image-digest"), "detail.image-digest", env)
    tag = detail.get("image-tag")
    tags = () if tag in (None, "") else (tag,)
    yield from _signals("push", host, repository, digest, tags, "detail.image-tag", env)


def _ecr_image_scan(env: _Envelope, detail: Mapping[str, Any]) -> Iterator[ImageSignal]:
    _text(detail, "scan-status", env)  # present on every scan event; its absence means garbage
    host = _host(detail.get("registry-id") or env.account, env.region, env)
    repository = _repository(detail.get("repository-name"), "detail.repository-name", env)
    digest = _digest(detail.get("image-digest"), "detail.image-digest", env)
    tags = _tag_list(detail.get("image-tags"), "detail.image-tags", env)
    yield from _signals("scan", host, repository, digest, tags, "detail.image-tags", env)


def _inspector_finding(env: _Envelope, detail: Mapping[str, Any]) -> Iterator[ImageSignal]:
    resources = detail.get("resources")
    if not isinstance(resources, list):
        raise _bad(env, "no 'detail.resources' list")
    for index, resource in enumerate(resources):
        where = f"detail.resources[{index}]"
        if not isinstance(resource, Mapping):
            raise _bad(env, f"{where} is not an object")
        details = resource.get("details")
        image = details.get("awsEcrContainerImage") if isinstance(details, Mapping) else None
        if resource.get("type") != "AWS_ECR_CONTAINER_IMAGE" and image is None:
            continue  # an EC2 instance, a Lambda function, ...
        if not isinstance(image, Mapping):
            raise _bad(env, f"{where} is an ECR image without details.awsEcrContainerImage")
        where += ".details.awsEcrContainerImage"
        # The resource's own region is "N/A" in AWS's examples; the finding
        # lives in the image's region, which is the envelope's.
        host = _host(image.get("registry") or env.account, env.region, env)
        repository = _repository(image.get("repositoryName"), f"{where}.repositoryName", env)
        digest = _digest(image.get("imageHash"), f"{where}.imageHash", env)
        tags = _tag_list(image.get("imageTags"), f"{where}.imageTags", env)
        yield from _signals("finding", host, repository, digest, tags, f"{where}.imageTags", env)


def _inspector_scan(env: _Envelope, detail: Mapping[str, Any]) -> Iterator[ImageSignal]:
    named = detail.get("repository-name")
    if named in (None, ""):
        resources = env.resources if isinstance(env.resources, list) else ()
        named = next((r for r in resources if isinstance(r, str) and ":ecr:" in r), None)
        if named is None:
            return  # a scan of something that is not an ECR image
    if not isinstance(named, str):
        raise _bad(env, "detail.repository-name is not a string")
    account, region = env.account, env.region
    if named.startswith("arn:"):
        arn = _ECR_ARN_RE.fullmatch(named)
        if arn is None:
            raise _bad(env, f"detail.repository-name {_clip(named)} is not an ECR repository ARN")
        account, region, named = arn["account"], arn["region"], arn["rest"]
        # A resource ARN may end in the image's digest: repository/<name>/sha256:...
        named = re.sub(r"/sha(?:256|512):[0-9a-f]+$", "", named)
    host = _host(account, region, env)
    repository = _repository(named, "detail.repository-name", env)
    digest = _digest(detail.get("image-digest"), "detail.image-digest", env)
    tags = _tag_list(detail.get("image-tags"), "detail.image-tags", env)
    yield from _signals("scan", host, repository, digest, tags, "detail.image-tags", env)


_PARSERS = {
    (ECR_SOURCE, "ECR Image Action"): _ecr_image_action,
    (ECR_SOURCE, "ECR Image Scan"): _ecr_image_scan,
    (INSPECTOR_SOURCE, "Inspector2 Finding"): _inspector_finding,
    (INSPECTOR_SOURCE, "Inspector2 Scan"): _inspector_scan,
}


# -- fields -------------------------------------------------------------------------


def _signals(
    kind: SignalKind,
    host: str,
    repository: str,
    digest: str | None,
    tags: Iterable[Any],
    where: str,
    env: _Envelope,
) -> Iterator[ImageSignal]:
    checked = [_tag(tag, where, env) for tag in tags]
    for tag in dict.fromkeys(checked) or (None,):
        yield ImageSignal(kind, host, repository, digest, tag, env.at)


def _loads(text: str | bytes, *, what: str) -> Any:
    if len(text) > _MAX_BODY:
        raise MalformedEvent(f"{what} is larger than an SQS message can be ({len(text)} bytes)")
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise MalformedEvent(f"{what} is not UTF-8") from None
    except RecursionError:
        raise MalformedEvent(f"{what} is nested too deeply to be an event") from None
    except ValueError as exc:
        # JSONDecodeError's message gives a position, never the text itself.
        raise MalformedEvent(f"{what} is not JSON ({exc})") from None


def _event_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedEvent("event 'time' is not a string")
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise MalformedEvent(f"event 'time' {_clip(value)} is not an ISO 8601 time") from None
    # EventBridge writes UTC with a Z; a naive time can only mean UTC too.
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def _bad(env: _Envelope, problem: str) -> MalformedEvent:
    return MalformedEvent(f"{env.detail_type!r} event: {problem}")


def _text(detail: Mapping[str, Any], key: str, env: _Envelope) -> str:
    value = detail.get(key)
    if not isinstance(value, str) or not value:
        raise _bad(env, f"no 'detail.{key}'")
    return value


def _host(account: Any, region: Any, env: _Envelope) -> str:
    if not isinstance(account, str) or not _ACCOUNT_RE.fullmatch(account):
        raise _bad(env, f"account {_clip(account)} is not 12 digits")
    if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
        raise _bad(env, f"region {_clip(region)} is not a region")
    # tests/unit/test_events.py checks that core/images.py's is_ecr_host
    # recognises every host made here, or signals would name hosts that no
    # workload's image is ever matched to.
    return ecr_registry_host(account, region)


def _repository(value: Any, where: str, env: _Envelope) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(env, f"no '{where}'")
    if len(value) > _REPOSITORY_MAX or not _REPOSITORY_RE.fullmatch(value):
        raise _bad(env, f"{where} {_clip(value)} is not an ECR repository name")
    return value


def _digest(value: Any, where: str, env: _Envelope) -> str | None:
    """The digest if it is one; else None, and the signal still names repository and tag.

    AWS's own published sample events carry placeholder digests
    (``sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234``,
    60 hex digits), and a tag push is worth re-resolving whatever the digest
    field holds: the signal is a hint to look again, and the reconciler reads
    the digest from the registry itself.
    """
    if isinstance(value, str) and is_digest(value):
        return value
    return None


def _tag_list(value: Any, where: str, env: _Envelope) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(env, f"{where} is not a list")
    return value


def _tag(value: Any, where: str, env: _Envelope) -> str:
    if not isinstance(value, str) or not _TAG_RE.fullmatch(value):
        raise _bad(env, f"{where} has an invalid tag {_clip(value)}")
    return value


def _clip(value: Any, limit: int = 40) -> str:
    """A short, quoted rendering of a bad value, safe for a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
