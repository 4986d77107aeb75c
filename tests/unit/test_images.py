"""Image references: Docker's normalization, pinning, ECR hosts and trust globs."""

from __future__ import annotations

import pytest

from imagepatch.core.images import (
    DOCKER_HUB,
    DOCKER_HUB_API,
    EcrRegistry,
    ImageRef,
    InvalidImagePattern,
    InvalidImageReference,
    is_ecr_host,
    matches_glob,
    parse_image,
)

D = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
D512 = "sha512:" + "c" * 128


@pytest.mark.parametrize(
    ("ref", "host", "repository", "tag", "digest"),
    [
        # Docker Hub defaults: host, library/, no implied tag in the value itself.
        ("python", "docker.io", "library/python", None, None),
        ("python:3.12-slim", "docker.io", "library/python", "3.12-slim", None),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("docker.io/python", "docker.io", "library/python", None, None),
        ("index.docker.io/library/python:3", "docker.io", "library/python", "3", None),
        # Only index.docker.io is folded (normalize.go); registry-1 is a host of its own.
        ("registry-1.docker.io/nginx", "registry-1.docker.io", "nginx", None, None),
        # A host is a first component with '.', ':' or 'localhost'.
        ("ghcr.io/org/app:v1", "ghcr.io", "org/app", "v1", None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/team/app:1", "localhost:5000", "team/app", "1", None),
        ("127.0.0.1:5000/base:1", "127.0.0.1:5000", "base", "1", None),
        ("[::1]:5000/base", "[::1]:5000", "base", None, None),
        ("Registry/app", "Registry", "app", None, None),  # upper case: a host, as in Docker
        ("public.ecr.aws/docker/library/python:3.12-slim", "public.ecr.aws", "docker/library/python", "3.12-slim", None),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments/api:2024.1", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "payments/api", "2024.1", None),
        # Digests, with and without a tag; the tag is kept for display.
        (f"ghcr.io/org/app@{D}", "ghcr.io", "org/app", None, D),
        (f"nginx:1.25@{D}", "docker.io", "library/nginx", "1.25", D),
        (f"quay.io/a/b@{D512}", "quay.io", "a/b", None, D512),
        # Separators inside path components, and a tag with '_' and '.'.
        ("org/a.b_c__d-e---f:_x.y-z", "docker.io", "org/a.b_c__d-e---f", "_x.y-z", None),
    ],
)
def test_parse_image_normalizes_like_docker(ref, host, repository, tag, digest):
    assert parse_image(ref) == ImageRef(host, repository, tag, digest)


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("", "is empty"),
        ("   ", "whitespace"),
        # Surrounding whitespace is refused, as Go's grammar (and the API server's
        # pod validation) refuse it.
        ("  alpine:3  ", "whitespace"),
        ("https://ghcr.io/org/app", "URL scheme"),
        ("ghcr.io/Org/app", "must be lower-case"),
        ("ghcr.io/org/app:", "tag ''"),
        ("app:-1", "tag '-1'"),
        ("app:" + "x" * 129, "tag 'xxx"),
        ("app@", "empty digest"),
        ("app@sha256:abc", "not a valid sha256 digest"),
        ("app@sha256:" + "A" * 64, "not a valid sha256 digest"),
        ("app@md5:" + "a" * 32, "'md5' is not supported"),
        ("ghcr.io/", "no repository name"),
        ("ghcr.io//app", "invalid path component ''"),
        ("ghcr.io/org/-app", "invalid path component '-app'"),
        ("ghcr.io/org/app_", "invalid path component 'app_'"),
        ("bad_host.io:x/app", "registry host 'bad_host.io:x'"),
        ("my app", "whitespace"),
        ("ghcr.io/" + "a" * 256, "longer than 255"),
    ],
)
def test_parse_image_rejects_bad_references_with_a_reason(ref, problem):
    with pytest.raises(InvalidImageReference) as info:
        parse_image(ref)
    assert isinstance(info.value, ValueError)
    assert problem in str(info.value)
    assert str(info.value).startswith("invalid image reference ")


def test_parse_image_rejects_non_strings():
    with pytest.raises(InvalidImageReference, match="is not a string"):
        parse_image(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ref", "name", "api_host", "reference", "text"),
    [
        ("python", "docker.io/library/python", DOCKER_HUB_API, "latest", "docker.io/library/python"),
        ("python:3", "docker.io/library/python", DOCKER_HUB_API, "3", "docker.io/library/python:3"),
        (f"ghcr.io/o/a:1@{D}", "ghcr.io/o/a", "ghcr.io", D, f"ghcr.io/o/a:1@{D}"),
        ("127.0.0.1:5000/base:1", "127.0.0.1:5000/base", "127.0.0.1:5000", "1", "127.0.0.1:5000/base:1"),
    ],
)
def test_derived_forms(ref, name, api_host, reference, text):
    image = parse_image(ref)
    assert (image.name, image.api_host, image.reference, str(image)) == (name, api_host, reference, text)
    # The normalized text parses back to the same reference.
    assert parse_image(str(image)) == image


def test_pinned_drops_the_tag_and_uses_the_given_or_own_digest():
    image = parse_image(f"python:3.12@{D}")
    assert image.pinned() == f"docker.io/library/python@{D}"
    assert image.pinned(D2) == f"docker.io/library/python@{D2}"
    assert parse_image("ghcr.io/o/a:1").with_digest(D).pinned() == f"ghcr.io/o/a@{D}"


@pytest.mark.parametrize(("digest", "problem"), [(None, "has no digest"), ("sha256:nope", "not a sha256")])
def test_pinned_refuses_a_missing_or_malformed_digest(digest, problem):
    with pytest.raises(InvalidImageReference, match=problem):
        parse_image("ghcr.io/o/a:1").pinned(digest)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com", EcrRegistry("123456789012", "us-east-1")),
        ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", EcrRegistry("123456789012", "cn-north-1")),
        ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", EcrRegistry("123456789012", "us-gov-west-1")),
        ("123456789012.dkr-ecr.eu-west-1.on.aws", EcrRegistry("123456789012", "eu-west-1")),
        ("123456789012.DKR.ECR.us-east-1.amazonaws.com", EcrRegistry("123456789012", "us-east-1")),
        ("public.ecr.aws", None),
        ("12345678901.dkr.ecr.us-east-1.amazonaws.com", None),  # 11 digits
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com:443", None),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example", None),
        ("ghcr.io", None),
    ],
)
def test_is_ecr_host(host, expected):
    assert is_ecr_host(host) == expected


@pytest.mark.parametrize(
    ("image", "patterns", "expected"),
    [
        # A pattern with no tag trusts every tag (and digest) of the name.
        ("python:3.12-slim", ["docker.io/library/python"], True),
        (f"python@{D}", ["docker.io/library/python"], True),
        # Patterns are normalized like images when their first component is literal.
        ("python:3.12-slim", ["python"], True),
        ("python:3.12-slim", ["python:3.12-*"], True),
        ("python:3.11", ["python:3.12-*"], False),
        ("docker.io/bitnami/redis:7", ["bitnami/*"], True),
        ("index.docker.io/library/nginx", ["nginx"], True),
        # A bare reference is :latest, as Docker would pull it; digest-only has no tag.
        ("nginx", ["nginx:latest"], True),
        (f"nginx@{D}", ["nginx:latest"], False),
        (f"nginx:1@{D}", ["nginx:1"], True),
        # '*' crosses '/' and ':' (fnmatch), '?' is one character.
        ("ghcr.io/org/team/app:1", ["ghcr.io/org/*"], True),
        ("ghcr.io/org2/app", ["ghcr.io/org/*"], False),
        ("public.ecr.aws/docker/library/python:3.12", ["public.ecr.aws/docker/library/*"], True),
        ("127.0.0.1:5000/base:1", ["127.0.0.1:5000/base:?"], True),
        ("127.0.0.1:5000/base:10", ["127.0.0.1:5000/base:?"], False),
        ("127.0.0.1:5000/base:2", ["127.0.0.1:5000/base:[12]"], True),
        # A leading glob is used as written (no docker.io/ prefix).
        ("quay.io/x/library/y", ["*/library/*"], True),
        ("quay.io/x/y", ["*"], True),
        ("python", ["pyth*"], False),
        # Prefix globs are prefix globs: python* also trusts python2.
        ("python2", ["docker.io/library/python*"], True),
        ("python2", ["docker.io/library/python"], False),
        # Case-sensitive; any of several patterns.
        ("ghcr.io/org/app", ["GHCR.IO/org/app"], False),
        ("ghcr.io/org/app", ["quay.io/*", "ghcr.io/org/app"], True),
        ("ghcr.io/org/app", [], False),
        # An ImageRef is accepted as is.
        (parse_image("alpine:3"), ["alpine:3"], True),
    ],
)
def test_matches_glob(image, patterns, expected):
    assert matches_glob(image, patterns) is expected


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [(f"python@{D}", "digests are not matched"), ("", "non-empty"), (" python", "non-empty"), ("https://ghcr.io/*", "non-empty")],
)
def test_matches_glob_rejects_patterns_that_cannot_match(pattern, problem):
    # Even after an earlier pattern matched: a bad trust list fails loudly.
    with pytest.raises(InvalidImagePattern, match=problem) as info:
        matches_glob("python", ["python", pattern])
    assert isinstance(info.value, ValueError)


def test_matches_glob_rejects_a_bad_image():
    with pytest.raises(InvalidImageReference):
        matches_glob("Not A Ref", ["*"])


# -- the distribution/reference package's own tables -------------------------------------
#
# Source of truth: github.com/distribution/reference (commit 0965666),
# reference_test.go TestReferenceParse, and normalize_test.go
# TestValidateReferenceName / TestValidateRemoteName. Each row is one of their
# inputs with their verdict; parse_image is ParseDockerRef/ParseNormalizedNamed,
# so for inputs that Parse reads without a domain the expected name is the
# normalized one (docker.io, library/). Deviation, on purpose: their test
# binary registers only sha256, so sha512 is "unsupported" there; containerd
# and the kubelet register sha512 (and sha384), and so does this parser.

_FF = "sha256:" + "f" * 64
_GO_PARSE = [
    # (input, valid, domain or None for Docker Hub, path, tag, digest)
    ("test_com", True, None, "test_com", None, None),
    ("test.com:tag", True, None, "test.com", "tag", None),
    ("test.com:5000", True, None, "test.com", "5000", None),
    ("test.com/repo:tag", True, "test.com", "repo", "tag", None),
    ("test:5000/repo", True, "test:5000", "repo", None, None),
    ("test:5000/repo:tag", True, "test:5000", "repo", "tag", None),
    (f"test:5000/repo@{_FF}", True, "test:5000", "repo", None, _FF),
    (f"test:5000/repo:tag@{_FF}", True, "test:5000", "repo", "tag", _FF),
    ("", False, None, None, None, None),
    (":justtag", False, None, None, None, None),
    (f"@{_FF}", False, None, None, None, None),
    ("repo@sha256:" + "f" * 34, False, None, None, None, None),
    ("validname@invaliddigest:" + "f" * 64, False, None, None, None, None),
    ("Uppercase:tag", False, None, None, None, None),
    ("test:5000/Uppercase/lowercase:tag", False, None, None, None, None),
    ("lowercase:Uppercase", True, None, "lowercase", "Uppercase", None),
    ("domain/" + "a" * 256 + ":tag", False, None, None, None, None),
    ("a/" * 127 + "a:tag-puts-this-over-max", True, None, "a/" * 127 + "a", "tag-puts-this-over-max", None),
    ("aa/asdf$$^/aa", False, None, None, None, None),
    ("sub-dom1.foo.com/bar/baz/quux", True, "sub-dom1.foo.com", "bar/baz/quux", None, None),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", True, "sub-dom1.foo.com", "bar/baz/quux", "some-long-tag", None),
    ("b.gcr.io/test.example.com/my-app:test.example.com", True, "b.gcr.io", "test.example.com/my-app", "test.example.com", None),
    ("xn--n3h.com/myimage:xn--n3h.com", True, "xn--n3h.com", "myimage", "xn--n3h.com", None),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@{_FF}", True, "xn--7o8h.com", "myimage", "xn--7o8h.com", _FF),
    ("foo_bar.com:8080", True, None, "foo_bar.com", "8080", None),
    ("foo/foo_bar.com:8080", True, None, "foo/foo_bar.com", "8080", None),
    ("192.168.1.1", True, None, "192.168.1.1", None, None),
    ("192.168.1.1:tag", True, None, "192.168.1.1", "tag", None),
    ("192.168.1.1:5000", True, None, "192.168.1.1", "5000", None),
    ("192.168.1.1/repo", True, "192.168.1.1", "repo", None, None),
    ("192.168.1.1:5000/repo", True, "192.168.1.1:5000", "repo", None, None),
    ("192.168.1.1:5000/repo:5050", True, "192.168.1.1:5000", "repo", "5050", None),
    ("[2001:db8::1]", False, None, None, None, None),
    ("[2001:db8::1]:5000", False, None, None, None, None),
    ("[2001:db8::1]:tag", False, None, None, None, None),
    ("[2001:db8::1]/repo", True, "[2001:db8::1]", "repo", None, None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", True, "[2001:db8:1:2:3:4:5:6]", "repo", "tag", None),
    ("[2001:db8::1]:5000/repo", True, "[2001:db8::1]:5000", "repo", None, None),
    ("[2001:db8::1]:5000/repo:tag", True, "[2001:db8::1]:5000", "repo", "tag", None),
    (f"[2001:db8::1]:5000/repo@{_FF}", True, "[2001:db8::1]:5000", "repo", None, _FF),
    (f"[2001:db8::1]:5000/repo:tag@{_FF}", True, "[2001:db8::1]:5000", "repo", "tag", _FF),
    ("[2001:db8::]:5000/repo", True, "[2001:db8::]:5000", "repo", None, None),
    ("[::1]:5000/repo", True, "[::1]:5000", "repo", None, None),
    ("[fe80::1%eth0]:5000/repo", False, None, None, None, None),
    ("[fe80::1%@invalidzone]:5000/repo", False, None, None, None, None),
    ("example.com/" + "a" * 255 + ":tag", True, "example.com", "a" * 255, "tag", None),
]

_GO_NORMALIZED_VALID = [
    "docker/docker", "library/debian", "debian", "localhost/library/debian", "localhost/debian",
    "LOCALDOMAIN/library/debian", "LOCALDOMAIN/debian", "docker.io/docker/docker",
    "docker.io/library/debian", "docker.io/debian", "index.docker.io/docker/docker",
    "index.docker.io/library/debian", "index.docker.io/debian", "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian", "127.0.0.1:5000/debian", "192.168.0.1", "192.168.0.1:80",
    "192.168.0.1:8/debian", "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker", "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "Docker/docker", "DOCKER/docker",
    # TestValidateRemoteName
    "docker-rules/docker", "docker---rules/docker", "doc/docker", "d/docker", "jess/t", "dock__er/docker",
]
_GO_NORMALIZED_INVALID = [
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker",
    "-docker.io/docker/docker", "docker///docker", "docker.io/docker/Docker",
    "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000", "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
]


@pytest.mark.parametrize(("text", "valid", "domain", "path", "tag", "digest"), _GO_PARSE, ids=[r[0][:60] or "empty" for r in _GO_PARSE])
def test_reference_parse_table_of_distribution_reference(text, valid, domain, path, tag, digest):
    if not valid:
        with pytest.raises(InvalidImageReference):
            parse_image(text)
        return
    ref = parse_image(text)
    if domain is None:  # no domain: Docker Hub, with library/ for a one-component path
        assert ref.host == DOCKER_HUB
        assert ref.repository == (path if "/" in path else f"library/{path}")
    else:
        assert (ref.host, ref.repository) == (domain, path)
    assert (ref.tag, ref.digest) == (tag, digest)


@pytest.mark.parametrize("text", _GO_NORMALIZED_VALID)
def test_normalized_names_distribution_reference_accepts(text):
    parse_image(text)


@pytest.mark.parametrize("text", _GO_NORMALIZED_INVALID)
def test_normalized_names_distribution_reference_refuses(text):
    with pytest.raises(InvalidImageReference):
        parse_image(text)


@pytest.mark.parametrize(
    "text",
    [f"quay.io/a/b@sha384:{'d' * 96}", f"quay.io/a/b@{D512}"],
)
def test_registered_digest_algorithms_beyond_sha256_are_accepted(text):
    assert parse_image(text).digest == text.split("@")[1]


def test_tags_are_ascii_as_in_go():
    with pytest.raises(InvalidImageReference):
        parse_image("app:versión")
