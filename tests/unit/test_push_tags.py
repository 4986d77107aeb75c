"""Two rebuilds never choose the same push tag (``spec.rebuild.tagPolicy: New``).

A chosen tag is pushed minutes later, so the registry cannot say it is taken
in the meantime: two ImagePatches of one ``image:tag`` starting their builds
together would both take ``1.4-patch.20261206.1``, and the second push would
overwrite the first. With ``TagReservations`` (``adapters/builders/
reservations.py``) the choice is check-and-reserve per repository, and a tag
another patch recorded (``status.rebuild.tag``) is taken too, across restarts.
In-memory stand-ins for the registry and the API server (the project's own
adapter interfaces); the real registry version is in
``tests/integration/test_builders.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from typing import Any

from imagepatch.adapters.builders import BuildRequest
from imagepatch.adapters.builders.reservations import TagReservations
from imagepatch.adapters.errors import NotFoundError
from imagepatch.model.policy import parse_policy_spec
from imagepatch.reconcile import rebuilds
from tests.support.memkube import MemoryKube

APP = "registry.local/team/app"
DAY = dt.datetime(2026, 12, 6, 9, tzinfo=dt.UTC)
POLICY = parse_policy_spec({"namespaceSelector": {}, "rebuild": {"strategy": "external"}})


class Registry:
    """HEAD answers from ``tags``; each HEAD yields to the loop first, as a real one does."""

    def __init__(self, *tags: str) -> None:
        self.tags = set(tags)
        self.heads: list[str] = []

    async def head_manifest(self, image: str, ref: str | None = None) -> Any:
        self.heads.append(image)
        await asyncio.sleep(0)
        if image.rsplit(":", 1)[1] not in self.tags:
            raise NotFoundError(f"{image} not found", reason="NotFound")
        return None


def request(key: str = "k1") -> BuildRequest:
    return BuildRequest(key=key, strategy="external", image=APP, tag="1.4",
                        current_digest="sha256:" + "a" * 64, base_name="b:1",
                        base_digest="sha256:" + "b" * 64, started_at=DAY)


async def choose(registry: Registry, reservations: TagReservations | None,
                 *owners: str) -> list[str]:
    chosen = await asyncio.gather(*(
        rebuilds.with_push_tag(registry, request(f"k-{owner}"), POLICY,  # type: ignore[arg-type]
                               reservations, owner)
        for owner in owners
    ))
    return [c.push_tag for c in chosen]


def test_without_reservations_two_builds_starting_together_choose_one_tag():
    # The race this guards against: both HEADs answer 404 before either pushes.
    assert asyncio.run(choose(Registry(), None, "uid-a", "uid-b")) == [
        "1.4-patch.20261206.1", "1.4-patch.20261206.1"]


def test_builds_starting_together_choose_different_tags():
    registry = Registry("1.4-patch.20261206.1")
    tags = asyncio.run(choose(registry, TagReservations(), "uid-a", "uid-b", "uid-c"))
    assert tags == ["1.4-patch.20261206.2", "1.4-patch.20261206.3", "1.4-patch.20261206.4"]


def test_a_tag_another_patch_recorded_is_taken_and_ones_own_is_kept():
    recorded = [("uid-a", APP, "1.4-patch.20261206.1"), ("uid-x", "other/repo", "1.4-patch.20261206.2"),
                ("uid-b", APP, "")]

    async def claims() -> list[tuple[str, str, str]]:
        return recorded

    registry = Registry()
    # After a restart: nothing reserved in memory, but uid-a's build is to push .1
    assert asyncio.run(choose(registry, TagReservations(claims), "uid-b")) == [
        "1.4-patch.20261206.2"]
    # uid-a choosing again (its start was retried) gets its own tag back
    assert asyncio.run(choose(registry, TagReservations(claims), "uid-a")) == [
        "1.4-patch.20261206.1"]


def test_a_patch_choosing_again_gets_the_tag_it_reserved():
    reservations = TagReservations()
    registry = Registry()
    first = asyncio.run(choose(registry, reservations, "uid-a"))
    assert asyncio.run(choose(registry, reservations, "uid-a")) == first
    assert asyncio.run(choose(registry, reservations, "uid-b")) == ["1.4-patch.20261206.2"]


def test_reservations_are_bounded_oldest_first():
    reservations = TagReservations(limit=2)
    for n in (1, 2, 3):
        reservations.reserve(APP, f"t{n}", f"uid-{n}")

    async def taken() -> frozenset[str]:
        async with reservations.choosing(APP, "uid-x") as tags:
            return tags

    assert asyncio.run(taken()) == {"t2", "t3"}
    reservations.reserve(APP, "t2", "uid-2")  # reserved again: newest
    reservations.reserve(APP, "t4", "uid-4")
    assert asyncio.run(taken()) == {"t2", "t4"}


def test_recorded_push_tags_are_read_from_every_imagepatch_status():
    kube = MemoryKube()
    kube.patches = {
        "a": {"metadata": {"name": "a", "uid": "uid-a"}, "spec": {"image": APP},
              "status": {"rebuild": {"tag": "1.4-patch.20261206.1"}}},
        "b": {"metadata": {"name": "b", "uid": "uid-b"}, "spec": {"image": APP},
              "status": {"rebuild": {}}},
        "c": {"metadata": {"name": "c"}, "spec": {}, "status": {"rebuild": {"tag": "x"}}},
        "d": {"metadata": {"name": "d"}, "spec": {"image": APP}},
    }
    assert asyncio.run(rebuilds.recorded_push_tags(kube)) == [
        ("uid-a", APP, "1.4-patch.20261206.1")]


def test_when_every_candidate_is_taken_the_build_fails_saying_so():
    from imagepatch.adapters.errors import ConfigurationError
    from imagepatch.core import reasons, tags

    registry = Registry(*(f"1.4-patch.20261206.{n}" for n in range(2, tags.MAX_CANDIDATES + 1)))
    reservations = TagReservations()
    reservations.reserve(APP, "1.4-patch.20261206.1", "uid-a")  # chosen, not pushed yet
    try:
        asyncio.run(choose(registry, reservations, "uid-b"))
    except ConfigurationError as exc:
        assert exc.reason == reasons.NO_FREE_TAG and "exists already (100)" in str(exc)
    else:
        raise AssertionError("a tag was chosen although every one is taken")
    # Overwrite, or a tag already recorded: nothing is chosen or reserved
    overwrite = parse_policy_spec({"namespaceSelector": {}, "rebuild": {
        "strategy": "external", "tagPolicy": "Overwrite"}})
    kept = asyncio.run(rebuilds.with_push_tag(registry, request(), overwrite,  # type: ignore[arg-type]
                                              reservations, "uid-c"))
    assert kept.push_to == "1.4"


def test_start_asks_the_builder_to_push_under_the_reserved_tag_and_records_it():
    class Rebase:  # the project's own Builder interface, in memory
        def __init__(self) -> None:
            self.started: list[BuildRequest] = []

        async def start(self, request: BuildRequest) -> str:
            self.started.append(request)
            return "build-1"

    builder, reservations = Rebase(), TagReservations()
    policy = parse_policy_spec({"namespaceSelector": {}, "rebuild": {"strategy": "rebase"}})
    other = asyncio.run(rebuilds.with_push_tag(Registry(), request("k-other"), policy,  # type: ignore[arg-type]
                                               reservations, "uid-other"))
    seen = asyncio.run(rebuilds.start({"rebase": builder}, replace(request(), strategy="rebase"),  # type: ignore[dict-item]
                                      registry=Registry(), policy=policy,  # type: ignore[arg-type]
                                      reservations=reservations, owner="uid-a"))
    assert other.push_tag == "1.4-patch.20261206.1"
    assert [r.push_tag for r in builder.started] == ["1.4-patch.20261206.2"]
    assert (seen.state, seen.build_id) == ("Started", "build-1")
    assert seen.tag == builder.started[0].push_to == "1.4-patch.20261206.2"
