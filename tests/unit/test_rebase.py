"""The pure part of the rebase strategy (``core.rebase``): what is swapped, what is kept, what is refused.

Images here are small dicts in the shapes registries serve: an app built on
an old base (two base layers, and a base history with an ``empty_layer``
entry, so counting by entry and counting by layer differ), and a new base
with one layer. Digests are made up but well formed.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

import pytest

from imagepatch.core.oci import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_BASE_NAME,
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_V2,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
)
from imagepatch.core.oci import DOCKER_LAYER_GZIP as DOCKER_GZIP
from imagepatch.core.oci import OCI_LAYER as OCI_TAR
from imagepatch.core.oci import OCI_LAYER_GZIP as OCI_GZIP
from imagepatch.core.rebase import (
    Image,
    Layer,
    LayerDigester,
    RebaseRefused,
    check_image,
    merge_config,
    plan_index,
    platform_of,
    rebase_image,
    rebase_index,
    repin,
    select_platform,
)

OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"  # a type the rebase refuses

PATH = "PATH=/usr/local/bin:/usr/bin:/bin"


def d(label: str) -> str:
    """A well-formed digest named after ``label``."""
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


def image(
    what: str,
    layers: list[str],
    *,
    history: list[dict] | None = None,
    env: list[str] | None = None,
    media: str = "oci",
    arch: str = "amd64",
    variant: str | None = None,
    annotations: dict | None = None,
    extra_config: dict | None = None,
    layer_type: str | None = None,
) -> Image:
    """An image whose layer ``x`` has blob digest d("blob-x") and diff_id d("diff-x")."""
    manifest_type = OCI_MANIFEST if media == "oci" else DOCKER_V2
    config_type = OCI_CONFIG if media == "oci" else DOCKER_CONFIG
    ltype = layer_type or (OCI_GZIP if media == "oci" else DOCKER_GZIP)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": d(f"config-{what}"), "size": 100},
        "layers": [{"mediaType": ltype, "digest": d(f"blob-{x}"), "size": 10 + i} for i, x in enumerate(layers)],
    }
    if annotations is not None:
        manifest["annotations"] = annotations
    config: dict[str, Any] = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Env": env if env is not None else [PATH], **(extra_config or {})},
        "rootfs": {"type": "layers", "diff_ids": [d(f"diff-{x}") for x in layers]},
        "history": history if history is not None else [{"created_by": f"layer {x}"} for x in layers],
    }
    if variant:
        config["variant"] = variant
    return Image(d(f"manifest-{what}"), manifest_type, manifest, config, what=what)


OLD_HISTORY = [
    {"created_by": "ADD rootfs-v1"},
    {"created_by": "ENV LANG=C", "empty_layer": True},
    {"created_by": "RUN apt-get install ca-certificates"},
]
NEW_HISTORY = [{"created_by": "ADD rootfs-v2"}, {"created_by": "CMD sh", "empty_layer": True}]
APP_OWN_HISTORY = [
    {"created_by": "COPY app/ /app/", "empty_layer": True},
    {"created_by": "RUN build", "comment": "FROM base:1"},
]


def old_base(**kw) -> Image:
    kw.setdefault("history", copy.deepcopy(OLD_HISTORY))
    kw.setdefault("env", [PATH, "LANG=C", "BASE_VERSION=1"])
    return image("old base", ["b1", "b2"], **kw)


def new_base(**kw) -> Image:
    kw.setdefault("history", copy.deepcopy(NEW_HISTORY))
    kw.setdefault("env", [PATH, "LANG=C.UTF-8", "BASE_VERSION=2"])
    return image("new base", ["n1"], **kw)


def app(**kw) -> Image:
    kw.setdefault("history", copy.deepcopy(OLD_HISTORY) + copy.deepcopy(APP_OWN_HISTORY))
    kw.setdefault("env", [PATH, "LANG=C", "BASE_VERSION=1", "APP_PORT=8080"])
    kw.setdefault(
        "annotations",
        {ANNOTATION_BASE_NAME: "registry.local/base:1", ANNOTATION_BASE_DIGEST: d("manifest-old base")},
    )
    return image("app", ["b1", "b2", "a1"], **kw)


def with_changes(img: Image, fn) -> Image:
    manifest, config = copy.deepcopy(dict(img.manifest)), copy.deepcopy(dict(img.config))
    fn(manifest, config)
    return Image(img.digest, img.media_type, manifest, config, what=img.what)


# -- what a rebase produces -----------------------------------------------------------


def test_base_layers_diff_ids_and_history_are_swapped_and_the_apps_own_are_kept():
    result = rebase_image(app(), old_base(), new_base(), base_name="registry.local/base:1")
    manifest, config = result.manifest(), result.config()

    assert [x["digest"] for x in manifest["layers"]] == [d("blob-n1"), d("blob-a1")]
    assert config["rootfs"]["diff_ids"] == [d("diff-n1"), d("diff-a1")]
    # History counted by entry: the old base's three entries (one empty) go,
    # the new base's two (one empty) come, the app's two stay.
    assert config["history"] == NEW_HISTORY + APP_OWN_HISTORY
    assert [layer.from_base for layer in result.layers] == [True, False]
    assert [layer.diff_id for layer in result.layers] == [d("diff-n1"), d("diff-a1")]
    assert manifest["config"] == {
        "mediaType": OCI_CONFIG, "digest": result.config_digest, "size": len(result.config_bytes),
    }
    assert result.config_digest == "sha256:" + hashlib.sha256(result.config_bytes).hexdigest()
    assert result.digest == "sha256:" + hashlib.sha256(result.manifest_bytes).hexdigest()
    assert manifest["annotations"] == {
        ANNOTATION_BASE_NAME: "registry.local/base:1",
        ANNOTATION_BASE_DIGEST: d("manifest-new base"),
    }
    assert config["created"] == "2024-01-01T00:00:00Z" and config["architecture"] == "amd64"
    assert result.platform == "linux/amd64"
    # The result passes the same consistency check as its inputs.
    check_image(Image(result.digest, result.media_type, manifest, config, what="result"))


def test_a_rebase_is_deterministic_and_depends_on_every_input():
    first = rebase_image(app(), old_base(), new_base(), base_name="registry.local/base:1")
    again = rebase_image(app(), old_base(), new_base(), base_name="registry.local/base:1")
    assert (first.digest, first.manifest_bytes, first.config_bytes) == (
        again.digest, again.manifest_bytes, again.config_bytes,
    )
    other_base = image("newer base", ["n9"], history=[{"created_by": "ADD rootfs-v3"}])
    assert rebase_image(app(), old_base(), other_base).digest != first.digest


def test_an_app_with_no_own_layers_is_just_the_new_base_with_the_apps_config():
    bare = image("app", ["b1", "b2"], history=copy.deepcopy(OLD_HISTORY) + [{"created_by": "CMD x", "empty_layer": True}])
    result = rebase_image(bare, old_base(), new_base())
    assert [x.digest for x in result.layers] == [d("blob-n1")]
    assert result.config()["history"] == NEW_HISTORY + [{"created_by": "CMD x", "empty_layer": True}]


@pytest.mark.parametrize(
    "recorded, passed, expected",
    [
        ("registry.local/base:1", "", "registry.local/base:1"),
        (f"registry.local/base@{d('manifest-old base')}", "", f"registry.local/base@{d('manifest-new base')}"),
        ("registry.local/base:1", "registry.local/base:1", "registry.local/base:1"),
        (f"registry.local/base@{d('x')}", f"registry.local/base@{d('index')}", f"registry.local/base@{d('index')}"),
    ],
    ids=["tag-kept", "pinned-repinned-here", "passed-name", "passed-repinned-name"],
)
def test_the_base_name_is_kept_and_a_pinned_one_is_repinned(recorded, passed, expected):
    result = rebase_image(
        app(annotations={ANNOTATION_BASE_NAME: recorded, ANNOTATION_BASE_DIGEST: d("old")}),
        old_base(), new_base(), base_name=passed,
    )
    annotations = result.manifest()["annotations"]
    assert annotations[ANNOTATION_BASE_NAME] == expected
    assert annotations[ANNOTATION_BASE_DIGEST] == d("manifest-new base")


def test_an_oci_app_without_annotations_gets_the_base_recorded_and_other_annotations_stay():
    result = rebase_image(app(annotations=None), old_base(), new_base(), base_name="r/base:1")
    assert result.manifest()["annotations"] == {
        ANNOTATION_BASE_DIGEST: d("manifest-new base"), ANNOTATION_BASE_NAME: "r/base:1",
    }
    kept = rebase_image(app(annotations={"org.example/team": "payments"}), old_base(), new_base())
    assert kept.manifest()["annotations"] == {
        "org.example/team": "payments", ANNOTATION_BASE_DIGEST: d("manifest-new base"),
    }


def test_docker_v2_images_get_no_annotations_but_base_labels_are_updated():
    labels = {ANNOTATION_BASE_NAME: "r/base:1", ANNOTATION_BASE_DIGEST: d("manifest-old base"), "team": "x"}
    result = rebase_image(
        app(media="docker", annotations=None, extra_config={"Labels": labels}),
        old_base(media="docker"), new_base(media="docker"), base_name="r/base:1",
    )
    assert "annotations" not in result.manifest()
    assert result.media_type == DOCKER_V2
    assert result.manifest()["config"]["mediaType"] == DOCKER_CONFIG
    assert result.config()["config"]["Labels"] == {
        ANNOTATION_BASE_NAME: "r/base:1", ANNOTATION_BASE_DIGEST: d("manifest-new base"), "team": "x",
    }


# -- the config: the app's own settings win, inherited ones follow the base --------------


def test_env_inherited_variables_follow_the_new_base_and_the_apps_own_are_kept():
    merged, notes = merge_config(
        {"Env": [PATH, "LANG=C", "BASE_VERSION=1", "GONE=1", "APP_PORT=8080", "TZ=UTC"]},
        {"Env": [PATH, "LANG=C", "BASE_VERSION=1", "GONE=1", "TZ=Europe/Paris"]},
        {"Env": [PATH, "LANG=C.UTF-8", "BASE_VERSION=2", "NEW=yes", "TZ=Asia/Tokyo"]},
    )
    assert merged["Env"] == [
        PATH,                 # inherited, unchanged
        "LANG=C.UTF-8",       # inherited: follows the new base
        "BASE_VERSION=2",     # inherited: follows the new base
        "NEW=yes",            # added by the new base
        "TZ=UTC",             # the app's own override wins over both bases
        "APP_PORT=8080",      # the app's own
    ]                         # GONE: inherited, and the new base dropped it
    assert "Env GONE removed, as in the new base" in notes
    assert "Env LANG follows the new base" in notes
    assert "Env NEW added from the new base" in notes
    assert not any("TZ" in n or "APP_PORT" in n for n in notes)


@pytest.mark.parametrize(
    "app_cfg, old_cfg, new_cfg, expected",
    [
        # User: inherited follows, the app's own stays, a new base's USER is picked up.
        ({"User": "base"}, {"User": "base"}, {"User": "nonroot"}, {"User": "nonroot"}),
        ({"User": "app"}, {"User": "base"}, {"User": "nonroot"}, {"User": "app"}),
        ({}, {}, {"User": "nonroot"}, {"User": "nonroot"}),
        ({"User": "base"}, {"User": "base"}, {}, {}),
        # WorkingDir likewise.
        ({"WorkingDir": "/srv"}, {"WorkingDir": "/"}, {"WorkingDir": "/home"}, {"WorkingDir": "/srv"}),
        # Cmd follows only when Entrypoint was inherited too (ENTRYPOINT resets CMD).
        ({"Cmd": ["sh"]}, {"Cmd": ["sh"]}, {"Cmd": ["bash"]}, {"Cmd": ["bash"]}),
        ({"Entrypoint": ["/app"], "Cmd": ["sh"]}, {"Cmd": ["sh"]}, {"Cmd": ["bash"]},
         {"Entrypoint": ["/app"], "Cmd": ["sh"]}),
        ({"Cmd": ["/app/run"]}, {"Cmd": ["sh"]}, {"Cmd": ["bash"]}, {"Cmd": ["/app/run"]}),
        # Labels and ports per key.
        ({"Labels": {"base.version": "1", "app": "x"}}, {"Labels": {"base.version": "1"}},
         {"Labels": {"base.version": "2"}}, {"Labels": {"base.version": "2", "app": "x"}}),
        ({"ExposedPorts": {"80/tcp": {}, "8080/tcp": {}}}, {"ExposedPorts": {"80/tcp": {}}}, {},
         {"ExposedPorts": {"8080/tcp": {}}}),
    ],
    ids=["user-inherited", "user-own", "user-new", "user-dropped", "workdir-own", "cmd-inherited",
         "cmd-after-entrypoint", "cmd-own", "labels", "ports"],
)
def test_other_config_fields_follow_the_same_rule(app_cfg, old_cfg, new_cfg, expected):
    merged, _ = merge_config(app_cfg, old_cfg, new_cfg)
    assert merged == expected


def test_the_rebased_config_carries_the_merged_env_and_notes():
    result = rebase_image(app(), old_base(), new_base())
    assert result.config()["config"]["Env"] == [PATH, "LANG=C.UTF-8", "BASE_VERSION=2", "APP_PORT=8080"]
    assert "Env BASE_VERSION follows the new base" in result.notes


# -- refusals --------------------------------------------------------------------------


def _drop_history_entry(manifest, config):
    config["history"].pop()


def _extra_diff_id(manifest, config):
    config["rootfs"]["diff_ids"].append(d("diff-extra"))


REFUSALS = [
    # (id, app, old base, new base, reason, words in the message)
    ("app-oci-old-base-docker", app(), old_base(media="docker"), new_base(), "MediaTypeMismatch", "manifest types differ"),
    ("new-base-docker", app(), old_base(), new_base(media="docker"), "MediaTypeMismatch", "new base Docker v2"),
    ("docker-layer-in-oci-manifest", app(), old_base(), new_base(layer_type=DOCKER_GZIP), "MediaTypeMismatch", "layer 0"),
    ("docker-config-in-oci-manifest",
     with_changes(app(), lambda m, c: m["config"].update(mediaType=DOCKER_CONFIG)), old_base(), new_base(),
     "MediaTypeMismatch", "config"),
    ("served-type-differs", Image(d("a"), OCI_MANIFEST, {**app(media="docker").manifest}, app().config, "app"),
     old_base(), new_base(), "MediaTypeMismatch", "served as"),
    ("zstd-layer", app(), old_base(), new_base(layer_type=OCI_ZSTD), "UnsupportedLayer", "zstd"),
    ("foreign-layer", app(),
     old_base(), with_changes(new_base(), lambda m, c: m["layers"][0].update(urls=["https://x"])),
     "UnsupportedLayer", "foreign"),
    ("app-history-short", with_changes(app(), _drop_history_entry), old_base(), new_base(),
     "InconsistentImage", "non-empty history entries"),
    ("old-base-history-short", app(), with_changes(old_base(), lambda m, c: c["history"].pop(0)), new_base(),
     "InconsistentImage", "old base"),
    ("new-base-no-history", app(), old_base(), new_base(history=[]), "InconsistentImage", "new base: 0 non-empty"),
    ("diff-ids-count", with_changes(app(), _extra_diff_id), old_base(), new_base(), "InconsistentImage", "diff_ids"),
    ("no-rootfs", with_changes(app(), lambda m, c: c.pop("rootfs")), old_base(), new_base(), "InconsistentImage", "rootfs"),
    ("other-base-layers", image("app", ["x1", "x2", "a1"], history=OLD_HISTORY + APP_OWN_HISTORY), old_base(),
     new_base(), "BaseLayersMismatch", "not built on the recorded base"),
    ("same-blobs-other-diff-ids",
     with_changes(app(), lambda m, c: c["rootfs"]["diff_ids"].__setitem__(1, d("diff-other"))),
     old_base(), new_base(), "BaseLayersMismatch", "diff_id 1"),
    ("fewer-layers-than-base", image("app", ["b1"], history=[{"created_by": "ADD rootfs-v1"}]), old_base(),
     new_base(), "BaseLayersMismatch", "fewer"),
    ("history-differs",
     with_changes(app(), lambda m, c: c["history"][0].update(created_by="ADD something-else")),
     old_base(), new_base(), "HistoryMismatch", "does not start with the old base's 3 entries"),
    ("new-base-arm64", app(), old_base(), new_base(arch="arm64"), "PlatformMismatch", "linux/arm64"),
    ("old-base-variant", app(), old_base(arch="arm", variant="v7"), new_base(), "PlatformMismatch", "linux/arm/v7"),
]


@pytest.mark.parametrize(
    "app_img, old_img, new_img, reason, words", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_unsafe_rebases_are_refused_with_a_reason(app_img, old_img, new_img, reason, words):
    with pytest.raises(RebaseRefused) as refused:
        rebase_image(app_img, old_img, new_img)
    assert refused.value.reason == reason
    assert words in refused.value.message
    assert str(refused.value) == refused.value.message


# -- indexes ---------------------------------------------------------------------------


def index(media_type: str, entries: list[tuple[str, str, str | None]], annotations=None) -> dict:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": 500,
             "platform": {"os": "linux", "architecture": arch, **({"variant": v} if v else {})}}
            for digest, arch, v in entries
        ],
    }
    if annotations:
        doc["annotations"] = annotations
    return doc


APP_INDEX = index(OCI_INDEX, [(d("app-amd64"), "amd64", None), (d("app-arm64"), "arm64", None)])
OLD_INDEX = index(OCI_INDEX, [(d("old-amd64"), "amd64", None), (d("old-arm64"), "arm64", "v8"), (d("old-s390x"), "s390x", None)])
NEW_INDEX = index(OCI_INDEX, [(d("new-arm64"), "arm64", "v8"), (d("new-amd64"), "amd64", None)])


def test_an_index_is_planned_per_platform_and_the_bases_may_carry_more_platforms():
    plans = plan_index(APP_INDEX, OCI_INDEX, OLD_INDEX, OCI_INDEX, NEW_INDEX, OCI_INDEX)
    assert [(p.platform, p.app_digest, p.old_base_digest, p.new_base_digest) for p in plans] == [
        ("linux/amd64", d("app-amd64"), d("old-amd64"), d("new-amd64")),
        # arm64 and arm64/v8 are one platform.
        ("linux/arm64", d("app-arm64"), d("old-arm64"), d("new-arm64")),
    ]


INDEX_REFUSALS = [
    ("app-index-single-bases", (APP_INDEX, OCI_INDEX, {}, OCI_MANIFEST, {}, OCI_MANIFEST), "IndexMismatch",
     "the old base is a single image, the new base is a single image"),
    ("single-app-index-bases", ({}, OCI_MANIFEST, OLD_INDEX, OCI_INDEX, NEW_INDEX, OCI_INDEX), "IndexMismatch",
     "the app is a single image"),
    ("docker-list-base", (APP_INDEX, OCI_INDEX, OLD_INDEX, DOCKER_LIST, NEW_INDEX, OCI_INDEX), "MediaTypeMismatch",
     "old base Docker v2"),
    ("new-base-lacks-arm64",
     (APP_INDEX, OCI_INDEX, OLD_INDEX, OCI_INDEX, index(OCI_INDEX, [(d("n"), "amd64", None)]), OCI_INDEX),
     "PlatformMismatch", "the app has linux/arm64 but the new base index does not"),
    ("duplicate-platform",
     (APP_INDEX, OCI_INDEX, index(OCI_INDEX, [(d("1"), "amd64", None), (d("2"), "amd64", None)]), OCI_INDEX,
      NEW_INDEX, OCI_INDEX), "IndexMismatch", "two index entries for linux/amd64"),
    ("empty-app-index", (index(OCI_INDEX, []), OCI_INDEX, OLD_INDEX, OCI_INDEX, NEW_INDEX, OCI_INDEX),
     "IndexMismatch", "no platform images"),
]


@pytest.mark.parametrize("args, reason, words", [r[1:] for r in INDEX_REFUSALS], ids=[r[0] for r in INDEX_REFUSALS])
def test_index_rebases_need_three_indexes_with_matching_platforms(args, reason, words):
    with pytest.raises(RebaseRefused) as refused:
        plan_index(*args)
    assert refused.value.reason == reason
    assert words in refused.value.message


def test_the_new_index_points_at_the_rebased_images_and_drops_attestations():
    amd = rebase_image(app(), old_base(), new_base())
    arm = rebase_image(app(arch="arm64"), old_base(arch="arm64"), new_base(arch="arm64", variant="v8"))
    attestation = {"mediaType": OCI_MANIFEST, "digest": d("att"), "size": 9,
                   "platform": {"os": "unknown", "architecture": "unknown"},
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                   "vnd.docker.reference.digest": d("app-amd64")}}
    app_index = copy.deepcopy(APP_INDEX)
    app_index["manifests"].append(attestation)
    app_index["annotations"] = {ANNOTATION_BASE_NAME: "r/base:1", ANNOTATION_BASE_DIGEST: d("old-index")}

    result = rebase_index(
        app_index, OCI_INDEX, {d("app-amd64"): amd, d("app-arm64"): arm},
        base_digest=d("new-index"), base_name="r/base:1",
    )
    doc = json.loads(result.body)
    assert [(e["digest"], e["size"], e["platform"]["architecture"]) for e in doc["manifests"]] == [
        (amd.digest, len(amd.manifest_bytes), "amd64"),
        (arm.digest, len(arm.manifest_bytes), "arm64"),
    ]
    assert result.dropped == (d("att"),)
    assert doc["annotations"] == {ANNOTATION_BASE_NAME: "r/base:1", ANNOTATION_BASE_DIGEST: d("new-index")}
    assert result.digest == "sha256:" + hashlib.sha256(result.body).hexdigest()
    with pytest.raises(RebaseRefused, match="was not rebased") as refused:
        rebase_index(APP_INDEX, OCI_INDEX, {d("app-amd64"): amd}, base_digest=d("new-index"))
    assert refused.value.reason == "IndexMismatch"


def test_a_platform_is_selected_from_a_base_index_or_refused():
    assert select_platform(NEW_INDEX, "linux/arm64", what="new base") == d("new-arm64")
    with pytest.raises(RebaseRefused, match="new base has no linux/ppc64le image") as refused:
        select_platform(NEW_INDEX, "linux/ppc64le", what="new base")
    assert refused.value.reason == "PlatformMismatch"
    assert platform_of({"os": "linux", "architecture": "arm", "variant": "v7"}) == "linux/arm/v7"


@pytest.mark.parametrize(
    "name, digest, expected",
    [
        ("r/base:1", d("n"), "r/base:1"),
        (f"r/base@{d('o')}", d("n"), f"r/base@{d('n')}"),
        (f"r/base:1@{d('o')}", d("n"), f"r/base:1@{d('n')}"),
        (f"r/base@{d('o')}", "not-a-digest", f"r/base@{d('o')}"),
    ],
)
def test_repin(name, digest, expected):
    assert repin(name, digest) == expected


# -- layer bytes -------------------------------------------------------------------------


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


RAW = tar_bytes({"etc/os-release": b"v2\n", "bin/big": b"\0" * 3_000_000})
GZ = gzip.compress(RAW, mtime=0)


def digest_layer(blob: bytes, media_type: str, diff_id: str, *, chunk: int = 65536, size: int | None = None,
                 digest: str | None = None) -> None:
    descriptor = {"mediaType": media_type, "digest": digest or sha(blob), "size": len(blob) if size is None else size}
    digester = LayerDigester(descriptor, diff_id)
    for i in range(0, len(blob), chunk):
        digester.update(blob[i : i + chunk])
    digester.verify()


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 22], ids=["byte", "odd", "4k", "whole"])
def test_a_gzip_layer_checks_against_its_digest_size_and_uncompressed_diff_id(chunk):
    small = gzip.compress(tar_bytes({"a": b"x" * 50}), mtime=0)
    blob = GZ if chunk > 1 else small
    raw = RAW if chunk > 1 else gzip.decompress(small)
    digest_layer(blob, OCI_GZIP, sha(raw), chunk=chunk)
    digest_layer(blob, DOCKER_GZIP, sha(raw), chunk=chunk)


def test_uncompressed_and_multi_member_gzip_layers_check():
    digest_layer(RAW, OCI_TAR, sha(RAW))
    two_members = gzip.compress(RAW[:10000], mtime=0) + gzip.compress(RAW[10000:], mtime=0)
    digest_layer(two_members, OCI_GZIP, sha(RAW))


@pytest.mark.parametrize(
    "blob, kwargs, words",
    [
        (GZ, {"diff_id": sha(GZ)}, "uncompressed layer hashes to"),  # diff_id of the compressed bytes
        (GZ, {"digest": sha(b"other")}, "the blob hashes to"),
        (GZ, {"size": len(GZ) + 1}, "the descriptor says"),
        (GZ[:-100], {}, "truncated"),
        (b"not gzip at all", {}, "not valid gzip"),
    ],
    ids=["diff-id", "digest", "size", "truncated", "garbage"],
)
def test_a_layer_whose_bytes_disagree_is_refused(blob, kwargs, words):
    diff_id = kwargs.pop("diff_id", sha(RAW))
    with pytest.raises(RebaseRefused) as refused:
        digest_layer(blob, OCI_GZIP, diff_id, **kwargs)
    assert refused.value.reason == "LayerContentMismatch"
    assert words in refused.value.message


def test_a_layer_type_that_cannot_be_checked_is_refused():
    with pytest.raises(RebaseRefused) as refused:
        LayerDigester({"mediaType": OCI_ZSTD, "digest": sha(b""), "size": 0}, sha(b""))
    assert refused.value.reason == "UnsupportedLayer"


def test_a_result_layer_records_where_it_came_from():
    layer = Layer({"digest": d("x"), "mediaType": OCI_GZIP, "size": 1}, d("diff-x"), True)
    assert layer.digest == d("x") and layer.from_base
