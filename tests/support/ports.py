"""Free loopback ports, and the lifecycle of the server subprocesses the tests start.

The registry and moto fixtures both need the same things: a free port, a
child process whose output goes to a log file, a readiness poll, an error that
shows the log's tail when something goes wrong, and a stop that cannot hang.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that was free on ``host`` a moment ago.

    The kernel picks it (bind to port 0). There is a small window before the
    server binds it, so ``ServerProcess.start`` retries with a new port when the
    server exits early.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(log is empty)"


def _die_with_parent() -> None:
    # Linux only: SIGTERM the server if pytest dies without running teardown
    # (kill -9, OOM), so no orphaned registry or moto keeps a port.
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class ServerProcess:
    """One child server process with its log file."""

    def __init__(self, name: str, proc: subprocess.Popen, log_path: Path, port: int) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.port = port

    @classmethod
    def start(
        cls,
        name: str,
        argv_for_port: Callable[[int], Sequence[str]],
        ready: Callable[[int], bool],
        log_path: Path,
        *,
        timeout: float = 30.0,
        attempts: int = 3,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ServerProcess:
        """Start the server on a free port and wait until ``ready(port)`` is true.

        ``argv_for_port`` builds the command line for a port. If the process
        exits before it is ready (most often: someone took the port in the
        meantime), try again on another port, up to ``attempts`` times.
        """
        last_error = ""
        for _ in range(attempts):
            port = free_port()
            log = open(log_path, "ab")  # noqa: SIM115 - the child owns it until stop()
            log.write(f"--- starting {name} on port {port}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(argv_for_port(port)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                preexec_fn=_die_with_parent,
            )
            log.close()  # the child has its own descriptor
            server = cls(name, proc, log_path, port)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    last_error = f"{name} exited with code {proc.returncode} before it was ready"
                    break
                if ready(port):
                    return server
                time.sleep(0.1)
            else:
                server.stop()
                raise RuntimeError(
                    f"{name} was not ready on port {port} after {timeout:.0f}s; "
                    f"log {log_path}:\n{log_tail(log_path)}"
                )
        raise RuntimeError(f"{last_error}; log {log_path}:\n{log_tail(log_path)}")

    def stop(self, grace: float = 5.0) -> None:
        """Terminate, then kill if it does not exit within ``grace`` seconds."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(grace)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


def http_ok(url: str, *, ok: Callable[[httpx.Response], bool] | None = None) -> bool:
    """True when ``url`` answers at all (or satisfies ``ok``); False on connect errors."""
    try:
        resp = httpx.get(url, timeout=1.0)
    except httpx.TransportError:
        return False
    return ok(resp) if ok else True
