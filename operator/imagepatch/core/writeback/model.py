"""What a Git write-back edits, and with what: the new image, the target, the result.

``NewImage`` is the digest-pinned reference imagepatch writes; ``Target`` says
which image in a file it replaces (by the repository the workload runs) and
which policy's setter markers apply; ``EditResult`` is one file's new text
with a description of every change and of every line Flux's image automation
owns. ``WriteBackError`` is raised for a file that cannot be edited safely
(not YAML, a field that would lose its pin); its message names the file and
the field, for a condition. Pure: values only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imagepatch.core.images import InvalidImageReference, is_digest, parse_image

__all__ = ["EditResult", "NewImage", "Target", "WriteBackError", "short"]

_DIGEST_IN_TEXT = re.compile(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}")


class WriteBackError(ValueError):
    """A file, value or template that write-back cannot use; the message says what to fix."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NewImage:
    """The reference to write: ``repository`` (no tag, no digest), the tag the workload
    tracks (``""`` if none) and the digest that pins it."""

    repository: str
    tag: str
    digest: str

    def __post_init__(self) -> None:
        try:
            ref = parse_image(self.repository)
            if ref.tag or ref.digest:
                raise WriteBackError(
                    f"new image repository {self.repository!r} must not carry a tag or digest")
            if self.tag:
                parse_image(f"{self.repository}:{self.tag}")
        except InvalidImageReference as exc:
            raise WriteBackError(str(exc)) from None
        if not is_digest(self.digest):
            raise WriteBackError(f"new image digest {self.digest!r} is not a valid digest")

    def reference(self) -> str:
        """``repo:tag@digest``, or ``repo@digest`` when no tag is tracked."""
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.repository}{tag}@{self.digest}"


@dataclass(frozen=True, slots=True)
class Target:
    """Which image to replace: the repository the workload's container runs (compared
    normalized, as Docker does), the ImagePatchPolicy whose setter markers apply, and
    the dotted key of the image in a Helm values file, when the policy names one.
    (Positional arguments are accepted too, in this order.)"""

    repository: str
    policy: str
    helm_values_key: str | None = None

    def __post_init__(self) -> None:
        try:
            parse_image(self.repository)
        except InvalidImageReference as exc:
            raise WriteBackError(str(exc)) from None
        if not self.policy or ":" in self.policy or any(c.isspace() for c in self.policy):
            raise WriteBackError(f"policy name {self.policy!r} is not a Kubernetes name")
        if self.helm_values_key is not None and (
            not self.helm_values_key or "" in self.helm_values_key.split(".")
        ):
            raise WriteBackError(
                f"Helm values key {self.helm_values_key!r} must be dotted names like 'image'"
                " or 'app.image'")


@dataclass(frozen=True, kw_only=True, slots=True)
class EditResult:
    """One file after ``edit``: its text (the input, byte for byte, when nothing changed),
    what changed, the lines Flux's image automation owns for this repository, why the
    file was not read at all (``skipped``: not YAML, such as a Helm chart's template,
    else None), and whether it declares the image in a place ``edit`` writes
    (``declares``: also True when every place already holds the new reference)."""

    text: str
    changes: tuple[str, ...] = ()
    flux_owned: tuple[str, ...] = ()
    skipped: str | None = None
    declares: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def short(text: str) -> str:
    """``text`` with every sha256 digest cut to 12 hex digits and an ellipsis."""
    return _DIGEST_IN_TEXT.sub(r"\1…", text)
