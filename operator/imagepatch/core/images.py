"""Image references: parse, normalize and match them, with no I/O.

Everything that names an image (a container's ``image:``, a base recorded in
``org.opencontainers.image.base.name``, an ``imagepatch.dev/base-image``
annotation, a ``baseImages.trusted`` glob) goes through ``parse_image`` once,
so the rest of the operator compares normalized ``ImageRef`` values and never
raw strings. The rules are exactly those of the Go ``distribution/reference``
package (``regexp.go``, ``reference.go``, and ``ParseNormalizedNamed`` /
``ParseDockerRef`` in ``normalize.go``), which containerd, Docker and the
kubelet use: a first path component is a registry host only if it contains
``.`` or ``:``, is ``localhost``, or has upper-case letters; otherwise the
image is on Docker Hub (``docker.io``; ``index.docker.io`` is folded into it,
no other name is), and a one-component Docker Hub name lives under
``library/``. A 64-hex-digit name is refused (it would read as an image ID),
the repository path is at most 255 characters, tags are ASCII, an IPv6 host
is hex and colons in brackets, and a digest must be a registered algorithm
(sha256, sha384, sha512) with exactly its length of lower-case hex.
``tests/unit/test_images.py`` checks this against the package's own tables.

The registry adapter (``adapters/registry/``) turns an ``ImageRef`` into
HTTP requests; ``api_host`` is where it sends them (Docker Hub's API is not
served on ``docker.io``). Neighbours: ``core/policy.py`` and the planner use
``matches_glob`` for trusted bases; ``is_ecr_host`` routes ECR hosts to ECR
credentials and scanning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import NamedTuple

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API",
    "EcrRegistry",
    "ImageRef",
    "InvalidImagePattern",
    "InvalidImageReference",
    "is_digest",
    "is_ecr_host",
    "matches_glob",
    "parse_image",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# Names Docker treats as Docker Hub; all normalize to DOCKER_HUB.
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io"})  # normalize.go
DEFAULT_TAG = "latest"

# The grammar of distribution/reference (reference/regexp.go).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")
# Go's \w is ASCII; Python's is not.
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
# Digests whose length we know; others are refused rather than half-checked.
_DIGEST_RES = {
    "sha256": re.compile(r"sha256:[a-f0-9]{64}"),
    "sha384": re.compile(r"sha384:[a-f0-9]{96}"),
    "sha512": re.compile(r"sha512:[a-f0-9]{128}"),
}
_NAME_MAX = 255  # reference.go RepositoryNameTotalLengthMax: the path, without the host

_ECR_HOST_RE = re.compile(
    r"(?P<account>[0-9]{12})\."
    r"(?:dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    # Dual-stack endpoints (IPv4 + IPv6).
    r"|dkr-ecr(?:-fips)?\.(?P<region_ds>[a-z0-9-]+)\.on\.aws)"
)

_GLOB_CHARS = frozenset("*?[")


class InvalidImageReference(ValueError):
    """A string that is not a valid image reference; the message says why."""

    def __init__(self, reference: str, problem: str) -> None:
        super().__init__(reference, problem)
        self.reference = reference
        self.problem = problem

    def __str__(self) -> str:
        return f"invalid image reference {self.reference!r}: {self.problem}"


class InvalidImagePattern(ValueError):
    """A ``baseImages.trusted`` glob that can never match; the message says why."""

    def __init__(self, pattern: str, problem: str) -> None:
        super().__init__(pattern, problem)
        self.pattern = pattern
        self.problem = problem

    def __str__(self) -> str:
        return f"invalid image pattern {self.pattern!r}: {self.problem}"


@dataclass(frozen=True)
class ImageRef:
    """A normalized image reference.

    ``host`` is the registry as users name it (``docker.io``,
    ``123456789012.dkr.ecr.us-east-1.amazonaws.com``, ``127.0.0.1:5000``);
    ``repository`` is the path inside it (``library/python``). ``tag`` and
    ``digest`` are each None when the reference did not carry one.
    """

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``host/repository``: the image without tag or digest."""
        return f"{self.host}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host that serves the ``/v2/`` API for this image."""
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host

    @property
    def reference(self) -> str:
        """What to fetch: the digest if there is one (it wins over a tag, as in
        containerd and the kubelet), else the tag, else ``latest``."""
        return self.digest or self.tag or DEFAULT_TAG

    def pinned(self, digest: str | None = None) -> str:
        """``host/repository@<digest>``: the form the operator writes into a
        workload. Without an argument, the reference's own digest."""
        digest = digest or self.digest
        if digest is None:
            raise InvalidImageReference(str(self), "has no digest to pin")
        if not is_digest(digest):
            raise InvalidImageReference(digest, "is not a sha256, sha384 or sha512 digest")
        return f"{self.name}@{digest}"

    def with_digest(self, digest: str) -> ImageRef:
        """The same image and tag, resolved to ``digest``."""
        if not is_digest(digest):
            raise InvalidImageReference(digest, "is not a sha256, sha384 or sha512 digest")
        return ImageRef(self.host, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class EcrRegistry(NamedTuple):
    account: str
    region: str


def is_digest(value: str) -> bool:
    """True for a well-formed ``sha256:<64 hex>``, ``sha384:<96 hex>`` or ``sha512:<128 hex>``."""
    algorithm = value.split(":", 1)[0]
    pattern = _DIGEST_RES.get(algorithm)
    return pattern is not None and pattern.fullmatch(value) is not None


def _split_host(remainder: str) -> tuple[str | None, str]:
    """(host or None, path) by Docker's rule for the first component."""
    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return None, remainder


def parse_image(ref: str) -> ImageRef:
    """Parse and normalize an image reference, as Docker and the kubelet do.

    ``python`` → ``docker.io/library/python`` (no tag: ``reference`` is
    ``latest``); ``ghcr.io/o/app:1@sha256:…`` keeps both tag and digest.
    Raises ``InvalidImageReference`` naming the problem.
    """
    if not isinstance(ref, str):
        raise InvalidImageReference(repr(ref), "is not a string")
    text = ref
    if not text:
        raise InvalidImageReference(ref, "is empty")
    if "://" in text:
        raise InvalidImageReference(ref, "must not have a URL scheme")
    if any(c.isspace() for c in text):
        raise InvalidImageReference(ref, "contains whitespace")
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidImageReference(ref, "a 64-hex-digit name reads as an image ID, not a name")

    remainder, at, digest = text.partition("@")
    if at:
        if not digest:
            raise InvalidImageReference(ref, "has an empty digest after '@'")
        algorithm = digest.split(":", 1)[0]
        if algorithm not in _DIGEST_RES:
            raise InvalidImageReference(
                ref, f"digest algorithm {algorithm!r} is not supported (sha256, sha384, sha512)"
            )
        if not is_digest(digest):
            raise InvalidImageReference(ref, f"{digest!r} is not a valid {algorithm} digest")

    host, path = _split_host(remainder)

    # A tag is a ':' after the last '/'; earlier colons belong to the host's port.
    tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.find(":", last_slash + 1)
    if colon != -1:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidImageReference(
                ref, f"tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
            )

    if host is None:
        host = DOCKER_HUB
    else:
        if not _HOST_RE.fullmatch(host):
            raise InvalidImageReference(ref, f"registry host {host!r} is not a valid host[:port]")
        if host in _DOCKER_HUB_ALIASES:  # exact, as normalize.go compares
            host = DOCKER_HUB
    if not path:
        raise InvalidImageReference(ref, "has no repository name")
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.fullmatch(component):
            problem = (
                "repository names must be lower-case"
                if component.lower() != component
                else "path components are [a-z0-9] runs separated by '.', '_', '__' or '-'"
            )
            raise InvalidImageReference(ref, f"invalid path component {component!r}: {problem}")
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if len(path) > _NAME_MAX:
        raise InvalidImageReference(ref, f"repository path is longer than {_NAME_MAX} characters")
    return ImageRef(host=host, repository=path, tag=tag, digest=digest or None)


def is_ecr_host(host: str) -> EcrRegistry | None:
    """``(account, region)`` for an ECR private registry host, else None.

    Matches ``<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`` and the
    dual-stack ``<account>.dkr-ecr.<region>.on.aws``. ECR Public
    (``public.ecr.aws``) is not one: it uses anonymous Bearer tokens.
    """
    match = _ECR_HOST_RE.fullmatch(host.strip().lower())
    if match is None:
        return None
    return EcrRegistry(match["account"], match["region"] or match["region_ds"])


def _normalize_pattern(pattern: str) -> str:
    """Apply Docker's host/library defaults to a pattern whose first component
    is literal; a pattern starting with a glob is used as written."""
    if "@" in pattern:
        raise InvalidImagePattern(pattern, "digests are not matched: drop the '@…' part")
    if not pattern or pattern != pattern.strip() or "://" in pattern:
        raise InvalidImagePattern(pattern, "must be a non-empty host/repository[:tag] glob")
    # The first component is the host candidate; with no '/', it is the name
    # before any ':tag' (``python:3.*`` is a Docker Hub name with a tag glob).
    first = pattern.split("/", 1)[0] if "/" in pattern else pattern.split(":", 1)[0]
    if _GLOB_CHARS & set(first):
        return pattern
    host, path = _split_host(pattern)
    if host is None:
        host = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    elif host in _DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
    return f"{host}/{path}"


def matches_glob(name_or_ref: str | ImageRef, patterns: Iterable[str]) -> bool:
    """True when the image matches any of ``patterns`` (``baseImages.trusted``).

    What is matched, exactly:

    * The image is normalized (``parse_image``) and its digest is dropped. Two
      subject strings are formed: ``host/repository``, and, when it has a tag,
      ``host/repository:tag``. A bare reference counts as tag ``latest``, as
      Docker would pull; a digest-only reference has no tag.
    * A pattern matches when ``fnmatch.fnmatchcase`` accepts **either** subject.
      So ``docker.io/library/python`` trusts every tag of python, and
      ``docker.io/library/python:3.12-*`` only those tags.
    * Glob semantics are fnmatch's, case-sensitive: ``*`` and ``?`` also match
      ``/`` and ``:`` (``ghcr.io/org/*`` trusts ``ghcr.io/org/a/b:1``), and
      ``[...]`` is a character class.
    * A pattern whose first component has no glob character is normalized like
      an image first: ``python:3.*`` means ``docker.io/library/python:3.*`` and
      ``myorg/*`` means ``docker.io/myorg/*``. One whose first component has a
      glob (``*``, ``*/library/*``, ``pyth*``) is used as written, so ``*``
      trusts everything and ``pyth*`` matches nothing on Docker Hub.
    * A pattern with ``@`` raises ``InvalidImagePattern``: trust is by name,
      never by digest.
    """
    ref = name_or_ref if isinstance(name_or_ref, ImageRef) else parse_image(name_or_ref)
    subjects = [ref.name]
    tag = ref.tag if (ref.tag or ref.digest) else DEFAULT_TAG
    if tag:
        subjects.append(f"{ref.name}:{tag}")
    # Normalize every pattern first, so a bad one fails even when an earlier
    # one matched: a typo in a trust list must not depend on the image.
    normalized = [_normalize_pattern(pattern) for pattern in patterns]
    return any(fnmatchcase(subject, p) for p in normalized for subject in subjects)
