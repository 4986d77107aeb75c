"""Every Kubernetes API call has a timeout (adapters/kube.py ``_call``, adapters/kubeapi.py).

Given an API endpoint that accepts connections and never answers (a hung
API server, a wedged proxy: no real API server can be made to do this), a
call ends with a ``TransientError`` after the configured timeout instead of
holding its worker thread, and the pass waiting on it, forever. The guard
around the call (30 s against a 0.3 s timeout) only keeps a regression from
hanging the test run.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from imagepatch.adapters import kubeapi
from imagepatch.adapters.errors import TransientError
from imagepatch.adapters.kube import DEFAULT_REQUEST_TIMEOUT, Kube


@pytest.fixture
def black_hole() -> Iterator[str]:
    """http://127.0.0.1:PORT: accepts every connection, reads, and answers nothing."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def kube_at(url: str, **kw) -> Kube:
    return Kube(kubeapi.Client(kubeapi.ClusterConfig(server=url)), **kw)


def test_a_call_to_an_api_server_that_never_answers_times_out(black_hole: str) -> None:
    kube = kube_at(black_hole, request_timeout=0.3)

    async def call() -> None:
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            await asyncio.wait_for(kube.list_policies(), timeout=30)
        print(f"hung list ended after {time.monotonic() - started:.2f}s: {caught.value}")
        assert caught.value.reason == "APIUnavailable"
        assert "list ImagePatchPolicies" in str(caught.value)

    asyncio.run(call())


def test_the_timeout_defaults_to_a_minute_and_a_call_may_ask_for_less(black_hole: str) -> None:
    assert DEFAULT_REQUEST_TIMEOUT == 60.0
    seen: list[object] = []
    kube = kube_at(black_hole)

    def request(*_: object, **kwargs: object) -> dict:
        seen.append(kwargs["timeout"])
        return {}

    kube.api.request = request  # type: ignore[method-assign]
    asyncio.run(kube._call("probe", "GET", "/api/v1/namespaces"))
    asyncio.run(kube._call("probe", "GET", "/api/v1/namespaces", timeout=5))
    assert seen == [60.0, 5]
