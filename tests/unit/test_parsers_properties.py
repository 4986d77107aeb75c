"""Property tests: whatever the input, each parser of untrusted text returns a
value or raises its module's declared error, and nothing else.

The parsers are those of what other people write: image references
(``core.images.parse_image`` → ``InvalidImageReference``), AWS and classic cron
schedules (``core.schedule.parse_schedule`` → ``ScheduleError``), SQS/EventBridge
message bodies (``core.events.parse_message`` → ``MalformedEvent``) and
registry documents (``adapters.registry.parse_document`` → ``AdapterError``).
Inputs are drawn from each grammar's own alphabet and fragments, so most reach
deep into the parser instead of failing on the first character.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagepatch.adapters.errors import AdapterError
from imagepatch.adapters.registry import parse_document
from imagepatch.core.events import ImageSignal, MalformedEvent, parse_message
from imagepatch.core.images import ImageRef, InvalidImageReference, parse_image
from imagepatch.core.schedule import Schedule, ScheduleError, parse_schedule
from imagepatch.core.window import next_opening

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- image references ------------------------------------------------------------------

_REF_FRAGMENTS = st.sampled_from([
    "docker.io", "index.docker.io", "localhost", "ghcr.io", "127.0.0.1:5000", "[::1]", "[fe80::1%eth0]",
    "library", "a", "A", "-", "_", "__", ".", "..", ":", "::", "/", "//", "@", "sha256:", "sha512:",
    "sha384:", "f" * 64, "F" * 64, "0" * 128, "latest", "v1.2", "é", " ", "\t", "\n", "%", "://",
])
IMAGE_TEXT = st.one_of(
    st.text(alphabet="abcAZ09._-/:@[]%", max_size=80),
    st.lists(_REF_FRAGMENTS, max_size=12).map("".join),
    st.text(max_size=40),
)


@SETTINGS
@given(IMAGE_TEXT)
def test_parse_image_returns_a_reference_or_raises_invalid_image_reference(text):
    try:
        ref = parse_image(text)
    except InvalidImageReference:
        return
    assert isinstance(ref, ImageRef)
    # What it returns parses again to itself: normalization is a fixed point.
    assert parse_image(str(ref)) == ref


# -- schedules ------------------------------------------------------------------------------

_CRON_FIELD = st.one_of(
    st.sampled_from(["*", "?", "L", "W", "LW", "15W", "6L", "FRIL", "2#3", "3#1,6#3", "TUE#3", "MON-FRI",
                     "0/15", "1/10", "8-17", "SUN", "JAN", "1970", "2199", "2200", "0", "59", "60", "-1",
                     "99999999999999999999", "L-3", "#", "/", ",", "a"]),
    st.text(alphabet="0123456789*?LW#/,-", min_size=1, max_size=8),
)
SCHEDULE_TEXT = st.one_of(
    st.lists(_CRON_FIELD, min_size=4, max_size=7).map(lambda f: f"cron({' '.join(f)})"),
    st.lists(_CRON_FIELD, min_size=4, max_size=6).map(" ".join),
    st.tuples(st.sampled_from(["0", "1", "5", "01", "-1", "1.5", "99999999999", "x"]),
              st.sampled_from(["minute", "minutes", "hour", "hours", "day", "days", "week", "", "s"]))
      .map(lambda p: f"rate({p[0]} {p[1]})"),
    st.text(alphabet="0123456789-T:", max_size=22).map(lambda t: f"at({t})"),
    st.text(max_size=40),
)


@SETTINGS
@given(SCHEDULE_TEXT, st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]))
def test_parse_schedule_returns_a_schedule_or_raises_schedule_error(source, tz):
    try:
        schedule = parse_schedule(source, tz)
    except ScheduleError:
        return
    assert isinstance(schedule, Schedule)
    # A schedule that parses can be asked when it opens next, without an error.
    import datetime as dt

    nxt = next_opening(schedule, dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC))
    assert nxt is None or nxt.tzinfo is not None


# -- SQS / EventBridge messages ------------------------------------------------------------

_DIGESTS = st.sampled_from([
    "sha256:" + "7f" * 32, "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234", "sha256:",
    "", None, 42, "md5:" + "a" * 32,
])
_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), _DIGESTS),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


def _detail():
    keys = st.sampled_from([
        "action-type", "result", "repository-name", "image-digest", "image-tag", "image-tags",
        "scan-status", "registry-id", "resources", "finding-severity-counts",
    ])
    fixed = st.fixed_dictionaries({}, optional={
        "action-type": st.sampled_from(["PUSH", "DELETE", 3]),
        "result": st.sampled_from(["SUCCESS", "FAILURE", None]),
        "repository-name": st.sampled_from(["my-repo", "a/b", "Upper", "arn:aws:ecr:us-east-2:123456789012:repository/a/b", "", 5]),
        "image-digest": _DIGESTS,
        "image-tag": st.sampled_from(["latest", "", None, "has space", 7]),
        "image-tags": st.one_of(st.lists(st.sampled_from(["v1", "v2", None, "", "x" * 400]), max_size=3), st.text(max_size=5)),
        "scan-status": st.sampled_from(["COMPLETE", "FAILED", "", None]),
        "resources": st.lists(st.fixed_dictionaries({}, optional={
            "type": st.sampled_from(["AWS_ECR_CONTAINER_IMAGE", "AWS_EC2_INSTANCE"]),
            "details": st.one_of(_VALUES, st.fixed_dictionaries({"awsEcrContainerImage": st.fixed_dictionaries({}, optional={
                "registry": st.sampled_from(["123456789012", "me"]), "repositoryName": st.sampled_from(["r", ""]),
                "imageHash": _DIGESTS, "imageTags": st.lists(st.sampled_from(["v1", None]), max_size=2)})})),
        }), max_size=2),
    })
    return st.one_of(fixed, st.dictionaries(keys, _VALUES, max_size=5))


EVENTS = st.fixed_dictionaries({}, optional={
    "source": st.sampled_from(["aws.ecr", "aws.inspector2", "aws.ec2", "", 3]),
    "detail-type": st.sampled_from(["ECR Image Action", "ECR Image Scan", "Inspector2 Finding", "Inspector2 Scan", "Other"]),
    "account": st.sampled_from(["123456789012", "1234", None]),
    "region": st.sampled_from(["us-west-2", "mars", None]),
    "time": st.sampled_from(["2019-11-16T01:54:34Z", "yesterday", 5, None]),
    "resources": st.one_of(st.lists(st.text(max_size=60), max_size=2), _VALUES),
    "detail": st.one_of(_detail(), _VALUES),
})
BODIES = st.one_of(
    EVENTS.map(json.dumps),
    EVENTS.map(lambda e: json.dumps({"Type": "Notification", "Message": json.dumps(e)})),
    _VALUES.map(json.dumps),
    st.text(max_size=60),
    st.binary(max_size=60),
)


@SETTINGS
@given(BODIES)
def test_parse_message_returns_signals_or_raises_malformed_event(body):
    try:
        signals = parse_message(body)
    except MalformedEvent as exc:
        assert exc.reason
        return
    assert isinstance(signals, tuple)
    assert all(isinstance(s, ImageSignal) for s in signals)


# -- registry documents (manifests, indexes, configs) ------------------------------------------

_DESCRIPTOR = st.fixed_dictionaries({}, optional={
    "mediaType": st.one_of(st.text(max_size=10), st.integers()),
    "digest": _DIGESTS,
    "size": st.one_of(st.integers(), st.text(max_size=3)),
    "annotations": st.one_of(st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=10), st.integers()), max_size=3), _VALUES),
    "platform": st.one_of(st.fixed_dictionaries({}, optional={"os": st.sampled_from(["linux", 1]), "architecture": st.sampled_from(["amd64", None]), "os.features": st.lists(st.text(max_size=3), max_size=2)}), _VALUES),
})
DOCUMENTS = st.one_of(
    st.fixed_dictionaries({}, optional={
        "schemaVersion": st.one_of(st.just(2), _VALUES),
        "mediaType": st.one_of(st.sampled_from(["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"]), _VALUES),
        "config": st.one_of(_DESCRIPTOR, _VALUES),
        "manifests": st.one_of(st.lists(st.one_of(_DESCRIPTOR, _VALUES), max_size=3), _VALUES),
        "annotations": st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), _VALUES),
    }).map(lambda d: json.dumps(d).encode()),
    _VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=80),
    st.integers(min_value=0, max_value=20_000).map(lambda n: b"[" * n + b"]" * n),
)


@SETTINGS
@given(DOCUMENTS, st.sampled_from(["manifest", "config"]))
def test_parse_document_returns_an_object_or_raises_an_adapter_error(body, kind):
    try:
        doc = parse_document(body, what="hypothesis", kind=kind)
    except AdapterError as exc:
        assert exc.reason == "InvalidRegistryResponse"
        return
    assert isinstance(doc, dict)
