"""The tag a rebuild is pushed under: a new one from the policy's template.

AWS recommends immutable tags in ECR (Security Hub control ECR.2): there a
push over an existing tag is refused (``ImageTagAlreadyExistsException``).
So, by default (``spec.rebuild.tagPolicy: New``), every rebuild strategy
pushes the new image under a tag that does not exist yet, made from
``spec.rebuild.tagTemplate`` (default ``{tag}-patch.{yyyymmdd}.{n}``):

* ``{tag}``: the tag the workloads run, e.g. ``1.4``;
* ``{yyyymmdd}``: the UTC day the rebuild started (``status.rebuild.startedAt``);
* ``{n}``: 1, 2, …: the first whose tag does not exist yet (the caller asks
  the registry, one HEAD per candidate, in :func:`candidates` order).

``tagPolicy: Overwrite`` pushes over the running tag, as v0.1 did; only a
mutable repository accepts that. The rollout writes the tag the image was
pushed under with its digest (``repo:1.4-patch.20261129.1@sha256:…``).

Pure: the registry lookups are the caller's (``reconcile/rebuilds.py``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

from imagepatch.model.policy import DEFAULT_TAG_TEMPLATE

__all__ = ["DEFAULT_TEMPLATE", "MAX_CANDIDATES", "candidates", "render"]

DEFAULT_TEMPLATE = DEFAULT_TAG_TEMPLATE
MAX_CANDIDATES = 100  # n = 1..100: more rebuilds of one tag in one day means a loop
MAX_TAG_LENGTH = 128  # the distribution spec's tag grammar

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def render(template: str, *, tag: str, day: dt.date, n: int) -> str:
    """One tag from ``template`` (checked by the policy's parser, ``tag_template_error``).

    ``{tag}`` is shortened if the result would be longer than a tag may be.
    """
    fixed = template.replace("{yyyymmdd}", day.strftime("%Y%m%d")).replace("{n}", str(n))
    room = MAX_TAG_LENGTH - (len(fixed) - fixed.count("{tag}") * len("{tag}"))
    uses = fixed.count("{tag}")
    if uses:
        tag = tag[: max(room // uses, 0)]
    out = fixed.replace("{tag}", tag)
    if not _TAG.fullmatch(out):
        raise ValueError(f"template {template!r} makes {out!r}, which is not a valid tag")
    return out


def source_tag(template: str, tag: str) -> str:
    """The tag a template-made ``tag`` was made from, or ``tag`` itself.

    A workload patched once runs ``1.4-patch.20261129.1``; its next rebuild is
    ``1.4-patch.20261206.1``, not ``1.4-patch.20261129.1-patch.20261206.1``.
    """
    if "{tag}" not in template:
        return tag
    pattern, named = "", False
    for part in re.split(r"(\{tag\}|\{yyyymmdd\}|\{n\})", template):
        if part == "{tag}":
            pattern += "(?P=tag)" if named else "(?P<tag>.+)"
            named = True
        elif part == "{yyyymmdd}":
            pattern += "[0-9]{8}"
        elif part == "{n}":
            pattern += "[0-9]+"
        else:
            pattern += re.escape(part)
    match = re.fullmatch(pattern, tag)
    return match.group("tag") if match else tag


def candidates(template: str, *, tag: str, day: dt.date) -> Iterator[str]:
    """The tags to try, in order: the first that does not exist yet is the one.

    ``tag`` is the running tag; one made by the template stands for its source tag.
    """
    source = source_tag(template, tag)
    for n in range(1, MAX_CANDIDATES + 1):
        yield render(template, tag=source, day=day, n=n)
