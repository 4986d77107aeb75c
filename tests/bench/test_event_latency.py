"""Benchmark: latency from an EventBridge ``put_events`` to the consumer's callback.

Not part of ``make test`` (timings are measured and printed, never asserted).
Run with ``make bench``. Against moto in server mode: an ECR push event is put
on the bus, EventBridge delivers it to the SQS queue, and the consumer's long
poll hands its image signal to the callback; ten pushes, one at a time. The
consumer's behaviour (delivery, malformed messages, errors, stop) is tested in
``tests/integration/test_event_source.py``, whose queue and rule this reuses.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from tests.integration.test_event_source import (
    Bus,
    Recorder,
    digest_of,
    make_source,
    push_entry,
    run_until,
)

ROUNDS = 10


def test_put_events_to_callback_latency(aws, capsys) -> None:
    bus = Bus(aws)
    source = make_source(aws, bus.queue_url, wait_seconds=5)
    recorder = Recorder()
    sent: list[float] = []

    def push_one_at_a_time() -> None:
        time.sleep(0.5)  # let the consumer settle into its long poll
        for i in range(ROUNDS):
            sent.append(time.monotonic())
            bus.put(push_entry("team/web", digest_of(f"web {i}"), f"build-{i}"))
            deadline = time.monotonic() + 10
            while len(recorder.arrivals) <= i and time.monotonic() < deadline:
                time.sleep(0.005)

    asyncio.run(run_until(source, recorder, lambda: len(recorder.arrivals) == ROUNDS, during=push_one_at_a_time))

    # Each push reached the callback, in order: the figures below are about these ten.
    assert [s.tag for _, s in recorder.arrivals] == [f"build-{i}" for i in range(ROUNDS)]
    latencies = [(arrived - sent[i]) * 1000 for i, (arrived, _) in enumerate(recorder.arrivals)]
    with capsys.disabled():
        print(
            f"\nput_events -> on_signals latency over {ROUNDS} pushes (moto server, long poll): "
            f"median {statistics.median(latencies):.0f} ms, min {min(latencies):.0f} ms, "
            f"max {max(latencies):.0f} ms"
        )
