"""The verification stack is real: registry, moto and buildah behave as the
operator's tests assume (see DESIGN.md, "Verification stack").

Each test pins one behaviour the rest of the suite relies on, so a change in a
component (a new docker-registry, moto or buildah) fails here first, with a
clear name, instead of deep inside an end-to-end test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.support.images import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_BASE_NAME,
    LABEL_REVISION,
    make_base_image,
    make_base_index,
    platform_digest,
    unique_repo,
)
from tests.support.registry import OCI_INDEX, OCI_MANIFEST, sha256_digest

# -- registry and pure-Python images ----------------------------------------------------


@pytest.mark.parametrize("media", ["oci", "docker"])
def test_head_digest_is_sha256_of_the_pushed_manifest_bytes(registry, media):
    repo = unique_repo("base")
    base = make_base_image(registry, repo, "1", marker="v1", media=media)

    body, _media_type, get_digest = registry.get_manifest(repo, "1")

    assert registry.head_digest(repo, "1") == base.digest
    assert get_digest == base.digest == sha256_digest(body)


def test_base_image_is_well_formed_and_versioned_by_marker(registry):
    repo = unique_repo("base")
    v1 = make_base_image(registry, repo, "1", marker="v1")
    v1_again = make_base_image(registry, repo, "1-again", marker="v1")
    v2 = make_base_image(registry, repo, "2", marker="v2")

    # Same marker, same bytes: the build is reproducible. A new marker is a new base.
    assert v1.digest == v1_again.digest
    assert v2.digest != v1.digest

    body, media_type, _ = registry.get_manifest(repo, v2.digest)
    manifest = json.loads(body)
    assert media_type == OCI_MANIFEST
    config = json.loads(registry.get_blob(repo, manifest["config"]["digest"]))
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert len(config["history"]) == len(manifest["layers"]) == 1

    # diff_ids hash the *uncompressed* layer; the manifest lists the compressed blob.
    raw = gzip.decompress(registry.get_blob(repo, manifest["layers"][0]["digest"]))
    assert config["rootfs"]["diff_ids"] == [sha256_digest(raw)]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = set(tar.getnames())
        assert {"bin/busybox", "bin/sh", "bin/ls", "bin/cat", "bin/echo", "bin/sleep"} <= names
        assert tar.extractfile("etc/base-release").read() == b"v2\n"


def test_head_of_an_index_with_the_full_accept_list_returns_the_index_digest(registry):
    repo = unique_repo("multi")
    index = make_base_index(registry, repo, "1", marker="v1")

    body, media_type, _ = registry.get_manifest(repo, "1")
    assert media_type == OCI_INDEX
    assert {m["platform"]["architecture"] for m in json.loads(body)["manifests"]} == {
        "amd64",
        "arm64",
    }
    assert registry.head_digest(repo, "1") == index.digest == sha256_digest(body)
    assert platform_digest(registry, index, "amd64") != index.digest

    # Why the full list matters: without the index types the registry cannot
    # serve the index (docker-registry 2.8 answers 404).
    resp = httpx.head(
        f"{registry.url}/v2/{repo}/manifests/1", headers={"Accept": OCI_MANIFEST}, timeout=10
    )
    assert resp.status_code == 404 or resp.headers.get("Docker-Content-Digest") != index.digest


# -- moto ---------------------------------------------------------------------------------


def _put_ecr_image(ecr, registry, repo: str, tag: str, marker: str) -> str:
    """Put real manifest bytes (from the local registry) into moto's ECR; return the digest."""
    make_base_image(registry, repo, tag, marker=marker)
    manifest, media_type, digest = registry.get_manifest(repo, tag)
    ecr.put_image(
        repositoryName=repo,
        imageManifest=manifest.decode(),
        imageManifestMediaType=media_type,
        imageTag=tag,
        # moto would hash the layer digests instead of the manifest: always pass it.
        imageDigest=digest,
    )
    return digest


def test_moto_ecr_keeps_the_explicit_image_digest(aws, registry):
    ecr = aws.client("ecr")
    repo = unique_repo("app")
    ecr.create_repository(repositoryName=repo)

    digest = _put_ecr_image(ecr, registry, repo, "1", "v1")

    details = ecr.describe_images(repositoryName=repo)["imageDetails"]
    assert [(d["imageDigest"], d["imageTags"]) for d in details] == [(digest, ["1"])]
    images = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": digest}])["images"]
    assert hashlib.sha256(images[0]["imageManifest"].encode()).hexdigest() == digest[7:]

    # The `aws` fixture relies on reset: it forgets everything.
    aws.reset()
    assert ecr.describe_repositories()["repositories"] == []


def test_moto_ecr_serves_injected_scan_findings(aws, registry):
    ecr = aws.client("ecr")
    repo = unique_repo("app")
    ecr.create_repository(repositoryName=repo)
    digest = _put_ecr_image(ecr, registry, repo, "1", "v1")
    image_id = {"imageDigest": digest}

    ecr.start_image_scan(repositoryName=repo, imageId=image_id)
    # Injected after start_image_scan, bound to the imageId key we query with.
    aws.inject_ecr_scan_findings(
        {
            "repositoryName": repo,
            "imageId": image_id,
            "imageScanStatus": {"status": "COMPLETE", "description": "injected"},
            "imageScanFindings": {
                "findings": [
                    {
                        "name": "CVE-2024-0001",
                        "severity": "CRITICAL",
                        "attributes": [{"key": "package_name", "value": "busybox"}],
                    }
                ],
                "findingSeverityCounts": {"CRITICAL": 1},
            },
        }
    )

    resp = ecr.describe_image_scan_findings(repositoryName=repo, imageId=image_id)
    assert resp["imageScanStatus"]["status"] == "COMPLETE"
    findings = resp["imageScanFindings"]["findings"]
    assert [(f["name"], f["severity"]) for f in findings] == [("CVE-2024-0001", "CRITICAL")]

    # Like real ECR basic scanning: one scan per image per day.
    with pytest.raises(ClientError) as err:
        ecr.start_image_scan(repositoryName=repo, imageId=image_id)
    assert err.value.response["Error"]["Code"] == "LimitExceededException"


# -- buildah ------------------------------------------------------------------------------


def _pushed_manifest_and_config(registry, image):
    body, media_type, digest = registry.get_manifest(image.name, image.tag)
    assert digest == image.digest
    manifest = json.loads(body)
    config = json.loads(registry.get_blob(image.name, manifest["config"]["digest"]))
    return media_type, manifest, config


def test_buildah_builds_from_the_local_base_and_records_its_digest(registry, buildah):
    base = make_base_image(registry, unique_repo("base"), "1", marker="v1")
    app_repo = unique_repo("app")

    app = buildah.build_app(base, app_repo, "1", revision="abc123", labels={"team": "payments"})

    media_type, manifest, config = _pushed_manifest_and_config(registry, app)
    assert media_type == OCI_MANIFEST
    annotations = manifest["annotations"]
    assert annotations[ANNOTATION_BASE_DIGEST] == base.digest
    # FROM was pinned, and buildah records the reference as written.
    assert annotations[ANNOTATION_BASE_NAME] == base.pinned
    assert config["config"]["Labels"][LABEL_REVISION] == "abc123"
    assert config["config"]["Labels"]["team"] == "payments"
    # The app sits on the base's layer, and the RUN really ran on the base's busybox.
    base_manifest = json.loads(registry.get_manifest(base.name, base.digest)[0])
    assert manifest["layers"][0]["digest"] == base_manifest["layers"][0]["digest"]
    app_layer = gzip.decompress(registry.get_blob(app.name, manifest["layers"][-1]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(app_layer)) as tar:
        assert tar.extractfile("app/.built-on").read() == b"v1\nbuilt\n"


def test_buildah_records_the_tag_as_written_and_the_platform_digest_of_an_index(registry, buildah):
    index = make_base_index(registry, unique_repo("multi"), "1", marker="v1")

    app = buildah.build_app(index, unique_repo("app"), "1", pinned=False)

    _, manifest, _ = _pushed_manifest_and_config(registry, app)
    annotations = manifest["annotations"]
    assert annotations[ANNOTATION_BASE_NAME] == index.ref  # the tag, not resolved
    # For a multi-platform base, base.digest is the linux/amd64 manifest's
    # digest, not the index digest a HEAD of the tag returns.
    assert annotations[ANNOTATION_BASE_DIGEST] == platform_digest(registry, index, "amd64")
    assert annotations[ANNOTATION_BASE_DIGEST] != registry.head_digest(index.name, "1")
