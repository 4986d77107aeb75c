"""Push tags chosen but not pushed yet, so two rebuilds never choose the same one.

With ``spec.rebuild.tagPolicy: New`` the reconciler (``reconcile/rebuilds.py``,
``with_push_tag``) pushes a rebuild under the first tag of the policy's
template that the registry does not have. The build pushes minutes later, so
until then a HEAD cannot tell a chosen tag from a free one: two rebuilds of
one ``image:tag`` starting together (two ImagePatches, which kopf reconciles
concurrently), or one starting while another's build still runs, would both
choose ``1.4-patch.20261206.1``, and the second push would overwrite the first
(or be refused, in an immutable repository). Digests are pinned, so nothing
wrong would roll out, but a pushed tag must name one image for good.

So a candidate tag is taken when the registry has it, **or** another
ImagePatch recorded it as its ``status.rebuild.tag`` (a build in flight; read
from the API server each time, so it holds across operator restarts), **or**
this process reserved it for another ImagePatch that has not recorded it yet
(the moment between choosing and the status write). Choosing is serialised
per repository (:meth:`TagReservations.choosing`), which makes check-and-reserve
atomic within the operator; one replica reconciles at a time (leader election).

An ImagePatch is its ``metadata.uid``: one deleted and created again under
the same name is another, and its predecessor's build may still push.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

# (owner uid, repository host/repo, tag)
Claim = tuple[str, str, str]
Recorded = Callable[[], Awaitable[Iterable[Claim]]]

# Reservations kept in memory: each is also recorded in its patch's status
# soon after, so only the newest matter; the bound keeps a long run small.
DEFAULT_LIMIT = 4096


class TagReservations:
    """Check-and-reserve of push tags, per repository. ``recorded`` lists every ImagePatch's
    recorded push tag (``status.rebuild.tag``) as claims."""

    def __init__(self, recorded: Recorded | None = None, *, limit: int = DEFAULT_LIMIT) -> None:
        self._recorded = recorded
        self._limit = limit
        self._locks: dict[str, asyncio.Lock] = {}
        self._reserved: OrderedDict[tuple[str, str], str] = OrderedDict()

    @contextlib.asynccontextmanager
    async def choosing(self, image: str, owner: str) -> AsyncIterator[frozenset[str]]:
        """Hold ``image``'s choice; yield the tags taken by anyone but ``owner``.

        Whoever chooses calls :meth:`reserve` before leaving the block.
        """
        lock = self._locks.setdefault(image, asyncio.Lock())
        async with lock:
            taken = {tag for (name, tag), who in self._reserved.items()
                     if name == image and who != owner}
            if self._recorded is not None:
                taken |= {tag for who, name, tag in await self._recorded()
                          if name == image and who != owner and tag}
            yield frozenset(taken)

    def reserve(self, image: str, tag: str, owner: str) -> None:
        self._reserved[(image, tag)] = owner
        self._reserved.move_to_end((image, tag))
        while len(self._reserved) > self._limit:
            self._reserved.popitem(last=False)
