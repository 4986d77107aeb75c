"""Time as imagepatch reads and writes it (model/times.py): one definition each."""

from __future__ import annotations

import datetime as dt

import pytest

from imagepatch.model.times import (
    format_micro_time,
    format_milli_time,
    format_time,
    parse_time,
    parse_time_strict,
    utc,
    utcnow,
)

CET = dt.timezone(dt.timedelta(hours=1))
WHEN = dt.datetime(2026, 3, 8, 8, 0, 5, 123456, tzinfo=CET)


def test_kubernetes_times_are_utc_with_a_z_to_the_second():
    assert format_time(WHEN) == "2026-03-08T07:00:05Z"


def test_lease_times_keep_microseconds():
    assert format_micro_time(WHEN) == "2026-03-08T07:00:05.123456Z"


def test_security_hub_times_keep_milliseconds_and_take_naive_times_as_utc():
    assert format_milli_time(WHEN) == "2026-03-08T07:00:05.123Z"
    assert format_milli_time(WHEN.replace(tzinfo=None)) == "2026-03-08T08:00:05.123Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-08T07:00:05Z", dt.datetime(2026, 3, 8, 7, 0, 5, tzinfo=dt.UTC)),
        ("2026-03-08T08:00:05+01:00", dt.datetime(2026, 3, 8, 7, 0, 5, tzinfo=dt.UTC)),
        ("2026-03-08T07:00:05", dt.datetime(2026, 3, 8, 7, 0, 5, tzinfo=dt.UTC)),  # naive: UTC
        ("", None),
        (None, None),
        (42, None),
        ("yesterday", None),
    ],
)
def test_parse_time_reads_what_others_wrote_and_never_raises(value, expected):
    parsed = parse_time(value)
    assert parsed == expected
    assert parsed is None or parsed.tzinfo is not None


def test_parse_time_is_the_inverse_of_format_time():
    assert parse_time(format_time(WHEN)) == WHEN.replace(microsecond=0)
    assert parse_time_strict(format_time(WHEN)) == WHEN.replace(microsecond=0)


def test_parse_time_strict_refuses_what_the_operator_cannot_have_written():
    assert parse_time_strict("") is None
    assert parse_time_strict(None) is None
    with pytest.raises(ValueError):
        parse_time_strict("yesterday")


def test_utc_converts_aware_times_and_labels_naive_ones():
    assert utc(WHEN).tzinfo is dt.UTC and utc(WHEN) == WHEN
    assert utc(dt.datetime(2026, 1, 1)) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_the_real_clock_is_aware_utc():
    assert utcnow().utcoffset() == dt.timedelta(0)
