"""Is the operator alive? The liveness probe's decision, as a pure function.

kopf's zombie failure mode (nolar/kopf#787, #1276): the watch streams die
quietly, kopf waits forever, and a probe that always answers "ok" hides it.
An operator is taken as alive when, within ``stale_after`` seconds, it has
either received a watch event (kopf also replays every object when it
re-lists on each watch restart) or had an answer from the API server (the
detector lists policies and patches every few seconds). When neither
happened, the pod is reported dead and the kubelet restarts it; a fresh
process re-lists and re-watches everything.

Times are monotonic seconds; ``started`` gives a fresh process its grace.

A process whose watches are fine can still be broken: a background task
(detection, the policy resync, the queue consumer) that raises again each
time it is restarted. ``tasks_liveness`` reports such a process dead too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Liveness:
    alive: bool
    message: str


def watch_liveness(
    *,
    now: float,
    started: float,
    last_event: float | None,
    last_answer: float | None,
    stale_after: float,
) -> Liveness:
    """Alive if a watch event or an API answer came within ``stale_after`` seconds."""
    seen = [t for t in (last_event, last_answer) if t is not None]
    latest = max(seen, default=started)
    quiet = now - max(latest, started)
    if quiet <= stale_after:
        return Liveness(alive=True, message=f"last watch event or API answer {quiet:.0f}s ago")
    what = "no watch event and no API answer"
    if not seen:
        return Liveness(alive=False, message=f"{what} since start {quiet:.0f}s ago")
    return Liveness(alive=False, message=f"{what} for {quiet:.0f}s (limit {stale_after:.0f}s)")


def tasks_liveness(
    *,
    now: float,
    deaths: Mapping[str, Sequence[float]],
    window: float,
    max_restarts: int,
) -> Liveness:
    """Alive unless a background task died more than ``max_restarts`` times in ``window`` s.

    A supervisor restarts a task that raised (``reconcile.supervisor``); a
    task that keeps dying is a process the kubelet should replace, and
    until it is, the probe says which task and how often.
    """
    recent = {
        task: sum(1 for t in times if now - t <= window) for task, times in deaths.items()
    }
    dying = sorted(task for task, n in recent.items() if n > max_restarts)
    if dying:
        what = ", ".join(f"{task} ({recent[task]} times)" for task in dying)
        return Liveness(
            alive=False, message=f"background task died in the last {window:.0f}s: {what}"
        )
    return Liveness(alive=True, message="background tasks running")
