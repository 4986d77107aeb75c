"""The ``rebase`` strategy against the real registry, with apps built by buildah.

Given an app built ``FROM base:1`` and ``base:1`` since re-pushed, when the
rebase builder is started and polled, then the app's tag holds an image whose
base layers, diff_ids and history are the new base's and whose own are the
app's; the image passes the project's own consistency check **as pushed**
(``verify_image``: media types, counts, and every layer gunzipped and hashed
against its diff_id); and buildah can build ``FROM`` it, with a ``RUN`` that
executes the new base's shell. Unsafe cases are refused with a reason, and
nothing is pushed then.

Also here: the registry client's write calls the strategy added
(``blob_exists``, ``push_blob``, ``mount_or_copy_blob``, ``open_blob``,
``put_manifest``) over plain HTTP, Basic auth and Bearer tokens, including the
copy fallback between two registries.

Async code runs under ``asyncio.run``, one event loop per scenario, with the
registry client made inside it.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagepatch.adapters.builders import BuildRequest, BuildState, BuildStatus
from imagepatch.adapters.builders.rebase import RebaseBuilder, verify_image
from imagepatch.adapters.errors import ConfigurationError
from imagepatch.adapters.registry import (
    LOOPBACK_NETWORKS,
    Credentials,
    RegistryClient,
    RequestStats,
    RetryPolicy,
    StaticCredentials,
)
from imagepatch.core.rebase import RebaseRefused
from tests.integration.test_registry_client import PASSWORD, USER, TokenServer
from tests.support.faultproxy import FaultProxy
from tests.support.images import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_BASE_NAME,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    Buildah,
    ImageRef,
    make_base_image,
    make_base_index,
    platform_digest,
    unique_repo,
)
from tests.support.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    LocalRegistry,
    sha256_digest,
    start_htpasswd_registry,
    start_registry_with_auth,
)

FAST = RetryPolicy(attempts=3, timeout=30.0, wait_initial=0.01, wait_max=0.05, wait_jitter=0.0)
RELEASE_LABEL = "dev.imagepatch.test.base-release"


# -- helpers -------------------------------------------------------------------------------


def request_for(app: ImageRef, old_base: ImageRef, new_base_digest: str, **kw) -> BuildRequest:
    fields = {
        "key": f"{app.repository}|{new_base_digest}",
        "strategy": "rebase",
        "image": app.repository,
        "tag": app.tag,
        "current_digest": app.digest,
        "base_name": old_base.ref,
        "base_digest": new_base_digest,
        "old_base_digest": old_base.digest,
    }
    fields.update(kw)
    return BuildRequest(**fields)


def rebase(request: BuildRequest, **client_kwargs) -> tuple[str, BuildStatus, RequestStats]:
    """start + poll with a fresh client; returns (build id, status, request counts)."""

    async def main():
        client_kwargs.setdefault("retry", FAST)
        client_kwargs.setdefault("allow_networks", LOOPBACK_NETWORKS)  # the test registry
        async with RegistryClient(**client_kwargs) as client:
            builder = RebaseBuilder(client)
            build_id = await builder.start(request)
            return build_id, await builder.poll(build_id, request), client.stats

    return asyncio.run(main())


def verified(reference: str, **client_kwargs):
    async def main():
        client_kwargs.setdefault("retry", FAST)
        client_kwargs.setdefault("allow_networks", LOOPBACK_NETWORKS)  # the test registry
        async with RegistryClient(**client_kwargs) as client:
            return await verify_image(client, reference)

    return asyncio.run(main())


def manifest_and_config(registry: LocalRegistry, repo: str, ref: str) -> tuple[dict, dict]:
    body, _, _ = registry.get_manifest(repo, ref)
    manifest = json.loads(body)
    return manifest, json.loads(registry.get_blob(repo, manifest["config"]["digest"]))


def layer_files(registry: LocalRegistry, repo: str, digest: str) -> dict[str, bytes]:
    """Regular files of a gzip layer blob: {path: content}."""
    raw = gzip.decompress(registry.get_blob(repo, digest))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name.lstrip("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def containerfile_build(buildah: Buildah, text: str, repo: str, tag: str, *, platform: str | None = None) -> ImageRef:
    """Build and push a Containerfile with the session buildah (``platform``: ``bud --platform``)."""
    context = buildah.contexts / f"{repo}-{tag}-{uuid.uuid4().hex[:6]}"
    context.mkdir(parents=True)
    (context / "app").mkdir()
    (context / "app" / "app.txt").write_text(f"{repo}:{tag}\n")
    (context / "Containerfile").write_text(text)
    if platform is None:
        return buildah.build(context, repo, tag)
    target = f"{buildah.registry.host}/{repo}:{tag}"
    buildah._run(
        "bud", "--isolation", "chroot", "--tls-verify=false", "--pull=always", "--platform", platform,
        "--signature-policy", str(buildah.policy), "-f", str(context / "Containerfile"), "-t", target, str(context),
    )
    buildah._run("push", "--tls-verify=false", "--signature-policy", str(buildah.policy), target, f"docker://{target}")
    return ImageRef(f"{buildah.registry.host}/{repo}", tag, buildah.registry.head_digest(repo, tag))


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def hand_made_app(dest: LocalRegistry, repo: str, tag: str, base: ImageRef, src: LocalRegistry) -> ImageRef:
    """An app image built 'by hand' on ``base`` (which is in ``src``), pushed to ``dest``.

    For registries buildah is not configured for. It has what buildah makes:
    the base's layers and history, one layer of its own, an empty_layer
    history entry, and the base annotations.
    """
    base_manifest, base_config = manifest_and_config(src, base.name, base.digest)
    for layer in base_manifest["layers"]:
        dest.push_blob(repo, src.get_blob(base.name, layer["digest"]))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"{repo}:{tag}\n".encode()
        info = tarfile.TarInfo("app/app.txt")
        info.size, info.mtime = len(data), 1704067200
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    layer = gzip.compress(raw, mtime=0)
    dest.push_blob(repo, layer)
    config = json.loads(json.dumps(base_config))
    config["config"]["Env"].append("APP_MODE=production")
    config["rootfs"]["diff_ids"].append(sha256_digest(raw))
    config["history"] += [
        {"created": "2024-01-02T00:00:00Z", "created_by": "COPY app/ /app/"},
        {"created": "2024-01-02T00:00:00Z", "created_by": "ENV APP_MODE=production", "empty_layer": True},
    ]
    config_bytes = _json(config)
    dest.push_blob(repo, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config_bytes), "size": len(config_bytes)},
        "layers": [*base_manifest["layers"], {"mediaType": OCI_LAYER_GZIP, "digest": sha256_digest(layer), "size": len(layer)}],
        "annotations": {ANNOTATION_BASE_NAME: base.ref, ANNOTATION_BASE_DIGEST: base.digest},
    }
    digest = dest.put_manifest(repo, tag, _json(manifest), OCI_MANIFEST)
    return ImageRef(f"{dest.host}/{repo}", tag, digest)


def assert_refused(status: BuildStatus, reason: str, refusal: str, words: str) -> None:
    assert status.state == BuildState.FAILED, status
    assert (status.reason, status.builder_status) == (reason, refusal), status
    assert words in status.message, status.message


# -- the single-image rebase ----------------------------------------------------------------


def test_a_buildah_app_is_rebased_onto_the_new_base_and_buildah_builds_on_top_of_it(registry, buildah):
    base_repo, app_repo = unique_repo("rb-base"), unique_repo("rb-app")
    v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app = buildah.build_app(v1, app_repo, "1.0", pinned=False)  # FROM base:1
    v2 = make_base_image(registry, base_repo, "1", marker="v2")  # the base moves on
    _, old_config = manifest_and_config(registry, app_repo, app.digest)
    old_manifest, _ = manifest_and_config(registry, app_repo, app.digest)
    request = request_for(app, v1, v2.digest)

    started = time.monotonic()
    build_id, status, stats = rebase(request)
    took = time.monotonic() - started

    assert status.state == BuildState.SUCCEEDED, status
    assert build_id.startswith("rebase:")
    assert status.digest == registry.head_digest(app_repo, "1.0") != app.digest
    print(f"a rebase took {took:.2f}s")  # a figure, not a timed assertion
    # The new base layer was mounted from the base repository, not uploaded;
    # only the config was (one POST and one PUT).
    assert stats.count(registry.host, "mount_blob") == 1
    assert stats.count(registry.host, "push_blob") == 2
    assert stats.count(registry.host, "put_manifest") == 1

    # The project's own consistency check, on what the registry now holds.
    checked = verified(f"{app.repository}@{status.digest}")
    assert (checked.digest, checked.platforms, checked.layers) == (status.digest, ("linux/amd64",), 2)

    manifest, config = manifest_and_config(registry, app_repo, status.digest)
    v2_manifest, v2_config = manifest_and_config(registry, base_repo, v2.digest)
    assert [x["digest"] for x in manifest["layers"]] == [
        v2_manifest["layers"][0]["digest"], old_manifest["layers"][1]["digest"],
    ]
    assert config["rootfs"]["diff_ids"] == [v2_config["rootfs"]["diff_ids"][0], old_config["rootfs"]["diff_ids"][1]]
    # History by entry: v1's one entry out, v2's in; buildah's three (two empty) kept.
    assert config["history"] == v2_config["history"] + old_config["history"][1:]
    assert manifest["annotations"] == {ANNOTATION_BASE_NAME: v2.ref, ANNOTATION_BASE_DIGEST: v2.digest}
    labels = config["config"]["Labels"]
    assert labels[RELEASE_LABEL] == "v2"  # inherited from the base: follows it
    assert labels["org.opencontainers.image.revision"] == old_config["config"]["Labels"]["org.opencontainers.image.revision"]
    assert config["created"] == old_config["created"]
    assert "Labels dev.imagepatch.test.base-release follow the new base" in status.message

    # Again (a restart, or a second poll): the same id, the same digest, no uploads.
    build_id_again, again, stats_again = rebase(request)
    assert (build_id_again, again.digest) == (build_id, status.digest)
    assert stats_again.count(registry.host, "mount_blob") == stats_again.count(registry.host, "push_blob") == 0

    # A fresh build FROM the rebased image: RUN executes the new base's shell.
    # The app's own RUN output (.built-on) still says v1: files written from
    # the old base's contents stay stale, which is why rebase is opt-in.
    on_top = containerfile_build(
        buildah,
        f"FROM {app.repository}@{status.digest}\n"
        "RUN grep -qx v2 /etc/base-release && cat /etc/base-release /app/.built-on > /app/after-rebase\n",
        unique_repo("rb-on-top"), "1",
    )
    top_manifest, _ = manifest_and_config(registry, on_top.name, on_top.digest)
    files = layer_files(registry, on_top.name, top_manifest["layers"][-1]["digest"])
    assert files["app/after-rebase"] == b"v2\nv1\nbuilt\n"
    print(f"\nrebase of a buildah app: {took:.2f}s; build on top: {buildah.timings[-1][1]:.2f}s")


def test_an_app_built_on_a_multi_arch_base_is_rebased_onto_the_new_index_platform(registry, buildah):
    base_repo, app_repo = unique_repo("rb-mbase"), unique_repo("rb-mapp")
    v1 = make_base_index(registry, base_repo, "1", marker="v1")
    app = buildah.build_app(v1, app_repo, "1", pinned=False)
    v2 = make_base_index(registry, base_repo, "1", marker="v2")
    # What detection records: buildah's recorded (platform) digest as the old
    # base, the index digest of the tag as the new one.
    lineage_digest = json.loads(registry.get_manifest(app_repo, app.digest)[0])["annotations"][ANNOTATION_BASE_DIGEST]
    assert lineage_digest == platform_digest(registry, v1, "amd64")

    _, status, _ = rebase(request_for(app, ImageRef(v1.repository, "1", lineage_digest), v2.digest))

    assert status.state == BuildState.SUCCEEDED, status
    manifest, _ = manifest_and_config(registry, app_repo, status.digest)
    # Recorded as buildah would: the new base's amd64 manifest.
    assert manifest["annotations"][ANNOTATION_BASE_DIGEST] == platform_digest(registry, v2, "amd64")
    assert verified(f"{app.repository}@{status.digest}").platforms == ("linux/amd64",)


# -- an index -------------------------------------------------------------------------------


def _push_attestation(registry: LocalRegistry, repo: str) -> dict:
    """A BuildKit-style attestation manifest, as an index entry."""
    config, statement = b"{}", b'{"_type":"https://in-toto.io/Statement/v0.1"}'
    registry.push_blob(repo, config)
    registry.push_blob(repo, statement)
    body = _json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": sha256_digest(statement), "size": len(statement)}],
    })
    digest = registry.put_manifest(repo, sha256_digest(body), body, OCI_MANIFEST)
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}


@pytest.mark.parametrize("index_records_base", [True, False], ids=["index-annotations", "platform-annotations-only"])
def test_a_two_platform_index_is_rebased_per_platform(registry, buildah, index_records_base):
    """With index annotations, lineage names the base index; without (as ``buildah
    manifest push`` makes it), it names the amd64 manifest's recorded base, and each
    platform's old base is what that platform's manifest records."""
    base_repo, app_repo = unique_repo("rb-ibase"), unique_repo("rb-iapp")
    v1 = make_base_index(registry, base_repo, "1", marker="v1")
    containerfile = (
        f"FROM {v1.ref}\nCOPY app/ /app/\n"
        "RUN cat /etc/base-release > /app/.built-on\n"
    )
    # Each platform's base carries the same (amd64) busybox, so buildah's RUN
    # executes for arm64 too.
    amd = containerfile_build(buildah, containerfile, app_repo, "amd64", platform="linux/amd64")
    arm = containerfile_build(buildah, containerfile, app_repo, "arm64", platform="linux/arm64/v8")
    entries = []
    for ref, arch, variant in ((amd, "amd64", None), (arm, "arm64", "v8")):
        body, media_type, digest = registry.get_manifest(app_repo, ref.digest)
        entries.append({"mediaType": media_type, "digest": digest, "size": len(body),
                        "platform": {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}})
    entries.append(_push_attestation(registry, app_repo))
    index_doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    if index_records_base:
        index_doc["annotations"] = {ANNOTATION_BASE_NAME: v1.ref, ANNOTATION_BASE_DIGEST: v1.digest}
    app_index = _json(index_doc)
    app = ImageRef(f"{registry.host}/{app_repo}", "1.0", registry.put_manifest(app_repo, "1.0", app_index, OCI_INDEX))
    v2 = make_base_index(registry, base_repo, "1", marker="v2")
    # What detection records as the old base: the image's lineage.
    recorded = v1.digest if index_records_base else platform_digest(registry, v1, "amd64")

    started = time.monotonic()
    _, status, stats = rebase(request_for(app, ImageRef(v1.repository, "1", recorded), v2.digest))
    took = time.monotonic() - started

    assert status.state == BuildState.SUCCEEDED, status
    assert registry.head_digest(app_repo, "1.0") == status.digest
    checked = verified(f"{app.repository}@{status.digest}")
    assert checked.platforms == ("linux/amd64", "linux/arm64")  # arm64 is arm64/v8
    body, media_type, _ = registry.get_manifest(app_repo, status.digest)
    index = json.loads(body)
    assert media_type == OCI_INDEX
    assert [e["platform"]["architecture"] for e in index["manifests"]] == ["amd64", "arm64"]  # attestation dropped
    if index_records_base:
        assert index["annotations"] == {ANNOTATION_BASE_NAME: v1.ref, ANNOTATION_BASE_DIGEST: v2.digest}
    else:
        assert "annotations" not in index
    for entry, arch in zip(index["manifests"], ("amd64", "arm64"), strict=True):
        manifest, config = manifest_and_config(registry, app_repo, entry["digest"])
        _, v2_config = manifest_and_config(registry, base_repo, platform_digest(registry, v2, arch))
        assert manifest["annotations"][ANNOTATION_BASE_DIGEST] == platform_digest(registry, v2, arch)
        assert config["rootfs"]["diff_ids"][0] == v2_config["rootfs"]["diff_ids"][0]
        assert config["architecture"] == arch and config["config"]["Labels"][RELEASE_LABEL] == "v2"
    # Both platforms share one base layer blob: mounted once.
    assert stats.count(registry.host, "mount_blob") == 1

    on_top = containerfile_build(
        buildah, f"FROM {app.repository}@{status.digest}\nRUN grep -qx v2 /etc/base-release\n",
        unique_repo("rb-ion-top"), "1",
    )
    assert on_top.digest
    print(f"\nrebase of a two-platform index ({'index' if index_records_base else 'platform'} lineage): {took:.2f}s")


# -- refusals -------------------------------------------------------------------------------


def test_a_deleted_old_base_is_refused_as_old_base_not_found(registry, buildah):
    base_repo, app_repo = unique_repo("rb-gone"), unique_repo("rb-gone-app")
    v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app = buildah.build_app(v1, app_repo, "1")
    v2 = make_base_image(registry, base_repo, "1", marker="v2")
    registry.delete_manifest(base_repo, v1.digest)

    _, status, _ = rebase(request_for(app, v1, v2.digest))

    assert_refused(status, "OldBaseNotFound", "OldBaseNotFound", f"{v1.repository}@{v1.digest} is not in the registry")
    assert registry.head_digest(app_repo, "1") == app.digest


def test_a_deleted_new_base_is_refused(registry, buildah):
    base_repo, app_repo = unique_repo("rb-nogone"), unique_repo("rb-nogone-app")
    v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app = buildah.build_app(v1, app_repo, "1")
    v2 = make_base_image(registry, base_repo, "1", marker="v2")
    registry.delete_manifest(base_repo, v2.digest)

    _, status, _ = rebase(request_for(app, v1, v2.digest))

    assert_refused(status, "RebaseRefused", "NewBaseNotFound", v2.digest)


def test_an_app_not_built_on_the_recorded_base_is_refused(registry, buildah):
    base_repo, other_repo, app_repo = unique_repo("rb-rec"), unique_repo("rb-other"), unique_repo("rb-liar")
    v1 = make_base_image(registry, base_repo, "1", marker="v1")
    other = make_base_image(registry, other_repo, "1", marker="something-else")
    app = buildah.build_app(other, app_repo, "1")  # really built on another base
    v2 = make_base_image(registry, base_repo, "1", marker="v2")

    _, status, _ = rebase(request_for(app, v1, v2.digest))  # but said to be on base v1

    assert_refused(status, "RebaseRefused", "BaseLayersMismatch", "was not built on the recorded base")
    assert registry.head_digest(app_repo, "1") == app.digest


@pytest.mark.parametrize(
    "old_media, new_media, words",
    [("docker", "docker", "app OCI, old base Docker v2, new base Docker v2"),
     ("oci", "docker", "app OCI, old base OCI, new base Docker v2")],
    ids=["app-oci-on-docker-base", "new-base-docker"],
)
def test_mismatched_media_types_are_refused(registry, buildah, old_media, new_media, words):
    base_repo, app_repo = unique_repo("rb-media"), unique_repo("rb-media-app")
    v1 = make_base_image(registry, base_repo, "1", marker="v1", media=old_media)
    app = buildah.build_app(v1, app_repo, "1")  # buildah pushes OCI whatever the base
    v2 = make_base_image(registry, base_repo, "1", marker="v2", media=new_media)

    _, status, _ = rebase(request_for(app, v1, v2.digest))

    assert_refused(status, "RebaseRefused", "MediaTypeMismatch", words)
    assert registry.head_digest(app_repo, "1") == app.digest


def test_a_new_base_whose_layer_does_not_match_its_diff_id_is_refused_before_anything_is_pushed(registry, buildah):
    base_repo, app_repo = unique_repo("rb-broken"), unique_repo("rb-broken-app")
    v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app = buildah.build_app(v1, app_repo, "1")
    v2 = make_base_image(registry, base_repo, "2", marker="v2")
    # A deliberately broken "v3": v2's layer, but a config claiming another diff_id.
    manifest, config = manifest_and_config(registry, base_repo, v2.digest)
    _, v1_config = manifest_and_config(registry, base_repo, v1.digest)
    config["rootfs"]["diff_ids"] = v1_config["rootfs"]["diff_ids"]
    config_bytes = _json(config)
    registry.push_blob(base_repo, config_bytes)
    manifest["config"].update(digest=sha256_digest(config_bytes), size=len(config_bytes))
    broken = registry.put_manifest(base_repo, "1", _json(manifest), OCI_MANIFEST)

    _, status, stats = rebase(request_for(app, v1, broken))

    assert_refused(status, "RebaseRefused", "LayerContentMismatch", "the uncompressed layer hashes to")
    assert stats.count(registry.host, "put_manifest") == 0
    assert registry.head_digest(app_repo, "1") == app.digest


def test_a_tag_someone_moved_on_is_not_overwritten(registry, buildah):
    base_repo, app_repo = unique_repo("rb-moved"), unique_repo("rb-moved-app")
    v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app = buildah.build_app(v1, app_repo, "1")
    newer = buildah.build_app(v1, app_repo, "1", files={"app.txt": "a newer release\n"})
    v2 = make_base_image(registry, base_repo, "1", marker="v2")

    _, status, _ = rebase(request_for(app, v1, v2.digest))

    assert_refused(status, "RebaseRefused", "TagMoved", f"now points to {newer.digest}")
    assert registry.head_digest(app_repo, "1") == newer.digest


def test_with_immutable_tags_the_rebase_goes_to_a_new_tag_and_a_rerun_does_not_push_it_again(
    registry, buildah
):
    """ECR with immutable tags (emulated by the fault proxy): overwriting the running
    tag is refused with TAG_INVALID; the new tag from the policy's template is pushed
    once, and a second poll (a restarted operator) finds it there and pushes nothing."""
    base_repo, app_repo = unique_repo("rb-imm"), unique_repo("rb-imm-app")
    v1 = make_base_image(registry, base_repo, "1", marker="v1")
    built = buildah.build_app(v1, app_repo, "1.0", pinned=False)
    v2 = make_base_image(registry, base_repo, "1", marker="v2")
    with FaultProxy.start(registry.host) as proxy:
        proxy.immutable_tags()
        app = ImageRef(f"{proxy.host}/{app_repo}", "1.0", built.digest)
        old_base = ImageRef(f"{proxy.host}/{base_repo}", "1", v1.digest)

        with pytest.raises(ConfigurationError) as refused:
            rebase(request_for(app, old_base, v2.digest))  # tagPolicy Overwrite
        assert "cannot be overwritten because the repository is immutable" in str(refused.value)
        assert proxy.count("PUT", path_contains=f"/{app_repo}/manifests/1.0") == 1

        new_tag = "1.0-patch.20261129.1"
        _, status, _ = rebase(request_for(app, old_base, v2.digest, push_tag=new_tag))
        _, again, _ = rebase(request_for(app, old_base, v2.digest, push_tag=new_tag))
        immutable = [r for r in proxy.requests if r.outcome == "immutable"]

    assert status.state == BuildState.SUCCEEDED, status
    assert f"{app.repository}:{new_tag} is now {status.digest}" in status.message
    assert registry.head_digest(app_repo, new_tag) == status.digest
    assert registry.head_digest(app_repo, "1.0") == built.digest  # the running tag is untouched
    assert again.state == BuildState.SUCCEEDED and again.digest == status.digest
    assert [r.path for r in immutable] == [f"/v2/{app_repo}/manifests/1.0"]  # only the overwrite


# -- the registry client's writes, and auth ------------------------------------------------


def test_registry_client_writes_against_the_real_registry(registry):
    repo, other = unique_repo("rb-writes"), unique_repo("rb-writes-src")
    image, source = f"{registry.host}/{repo}", f"{registry.host}/{other}"
    blob = b"some layer bytes " * 1000
    digest = sha256_digest(blob)
    registry.push_blob(other, blob)

    async def main():
        async with RegistryClient(retry=FAST, allow_networks=LOOPBACK_NETWORKS) as client:
            absent = await client.blob_exists(image, digest)
            mounted = await client.mount_or_copy_blob(image, digest, source=source)
            present = await client.mount_or_copy_blob(image, digest, source=source)
            config = b'{"a":1}'
            pushed = await client.push_blob(image, config)
            uploads = client.stats.count(registry.host, "push_blob")
            await client.push_blob(image, config)  # already there: no upload
            async with client.open_blob(image, digest) as chunks:
                streamed = b"".join([c async for c in chunks])
            body = _json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": {"mediaType": OCI_CONFIG, "digest": pushed, "size": len(config)},
                          "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": len(blob)}]})
            put = await client.put_manifest(image, "v1", body, OCI_MANIFEST)
            with pytest.raises(ConfigurationError) as wrong:
                await client.put_manifest(image, sha256_digest(b"other"), body, OCI_MANIFEST)
            return (absent, mounted, present, pushed, uploads, client.stats.count(registry.host, "push_blob"),
                    streamed, put, wrong.value.reason)

    absent, mounted, present, pushed, uploads, uploads_after, streamed, put, reason = asyncio.run(main())
    assert (absent, mounted, present) == (False, "mounted", "exists")
    assert pushed == sha256_digest(b'{"a":1}') and registry.has_blob(repo, pushed)
    assert uploads == uploads_after == 2  # POST + PUT once
    assert streamed == blob
    assert put == registry.head_digest(repo, "v1")
    assert reason == "DigestMismatch"


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory) -> Iterator[LocalRegistry]:
    reg = start_htpasswd_registry(tmp_path_factory.mktemp("rb-htpasswd"), USER, PASSWORD)
    try:
        yield reg
    finally:
        reg.stop()


def test_an_app_in_another_registry_gets_the_new_base_layers_copied(registry, basic_registry):
    """Base on one registry, app on another (Basic auth): no mount is possible, so copy."""
    base_repo, app_repo = unique_repo("rb-xbase"), unique_repo("rb-xapp")
    v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app = hand_made_app(basic_registry, app_repo, "1", v1, registry)
    v2 = make_base_image(registry, base_repo, "1", marker="v2")
    credentials = StaticCredentials({basic_registry.host: Credentials(USER, PASSWORD)})

    started = time.monotonic()
    _, status, stats = rebase(request_for(app, v1, v2.digest), credentials=credentials)
    took = time.monotonic() - started

    assert status.state == BuildState.SUCCEEDED, status
    assert "1 copied" in status.message
    assert stats.count(basic_registry.host, "mount_blob") == 0
    assert stats.count(registry.host, "get_blob") >= 1  # the copy's source
    checked = verified(f"{app.repository}@{status.digest}", credentials=credentials)
    assert checked.layers == 2
    _, config = manifest_and_config(basic_registry, app_repo, status.digest)
    assert "APP_MODE=production" in config["config"]["Env"]
    print(f"\nrebase across registries (copy, 1 MB layer): {took:.2f}s")


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory) -> Iterator[tuple[LocalRegistry, TokenServer]]:
    workdir: Path = tmp_path_factory.mktemp("rb-token")
    tokens = TokenServer(workdir)
    reg = start_registry_with_auth(
        workdir, "docker-registry-token",
        f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {tokens.service}\n"
        f"    issuer: {tokens.issuer}\n    rootcertbundle: {tokens.bundle}\n",
    )
    try:
        yield reg, tokens
    finally:
        reg.stop()
        tokens.stop()


def test_a_rebase_between_private_repositories_uses_bearer_tokens_with_push_and_mount_scopes(token_registry):
    reg, tokens = token_registry
    base_repo, app_repo = f"private/{unique_repo('base')}", f"private/{unique_repo('app')}"
    reg.http.headers["Authorization"] = "Bearer " + tokens.mint(
        [{"type": "repository", "name": r, "actions": ["pull", "push"]} for r in (base_repo, app_repo)],
        expires_in=3600,
    )
    try:
        v1 = make_base_image(reg, base_repo, "1", marker="v1")
        app = hand_made_app(reg, app_repo, "1", v1, reg)
        v2 = make_base_image(reg, base_repo, "1", marker="v2")
    finally:
        del reg.http.headers["Authorization"]
    credentials = StaticCredentials({reg.host: Credentials(USER, PASSWORD)})

    _, status, _ = rebase(request_for(app, v1, v2.digest), credentials=credentials)

    assert status.state == BuildState.SUCCEEDED, status
    assert "1 mounted" in status.message  # (stats count the 401 before the token too)
    scopes = {s for r in tokens.requests for s in r["scopes"]}
    # The action order is the client's or the registry challenge's; both mean the same.
    actions = {frozenset(s.rsplit(":", 1)[1].split(",")) for s in scopes
               if s.startswith(f"repository:{app_repo}:")}
    assert frozenset({"pull", "push"}) in actions
    assert f"repository:{base_repo}:pull" in scopes  # the mount's source
    assert all(r["authenticated"] for r in tokens.requests if r["scopes"])
    assert verified(f"{app.repository}@{status.digest}", credentials=credentials).layers == 2


def test_a_refusal_is_an_exception_with_reason_and_message_for_direct_callers(registry, buildah):
    """``RebaseBuilder.rebase`` raises; ``poll`` turns that into a Failed status."""
    base_repo, app_repo = unique_repo("rb-direct"), unique_repo("rb-direct-app")
    v1 = make_base_image(registry, base_repo, "1", marker="v1")
    app = buildah.build_app(v1, app_repo, "1")
    request = request_for(app, v1, v1.digest, base_name="", old_base_digest="")  # from the image's record

    async def main():
        async with RegistryClient(retry=FAST, allow_networks=LOOPBACK_NETWORKS) as client:
            builder = RebaseBuilder(client)
            registry.delete_manifest(base_repo, v1.digest)
            with pytest.raises(RebaseRefused) as refused:
                await builder.rebase(request)
            return refused.value

    refused = asyncio.run(main())
    assert refused.reason == "OldBaseNotFound"
    assert v1.digest in refused.message and str(refused) == refused.message
