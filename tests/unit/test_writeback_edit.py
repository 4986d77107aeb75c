"""core/writeback edit(): the image is pinned where the file declares it, and nowhere else.

Inputs are the shapes the tools document: kustomize's ``images:`` transformer
(the example of the Kubernetes docs' "Declarative Management of Kubernetes
Objects Using Kustomize" page), Flux's image-update guide (markers on a
Deployment, a HelmRelease, a Flux Kustomization and a kustomization.yaml),
a Bitnami chart's ``values.yaml`` image block (``registry``/``repository``/
``tag``/``digest``), and multi-document plain manifests. Every edit is
checked line by line: the lines that change are exactly the ones expected,
and everything else (comments, quoting, indentation, separators) is byte-identical.
"""

from __future__ import annotations

import difflib

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from imagepatch.core.writeback import (
    EditResult,
    NewImage,
    Target,
    WriteBackError,
    edit,
    image_name,
    yamltext,
)
from imagepatch.core.writeback.edit import split_reference
from imagepatch.core.writeback.yamltext import format_scalar

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
PODINFO = "ghcr.io/stefanprodan/podinfo"


def changed_lines(before: str, after: str) -> dict[int, str]:
    """Line number in ``before`` (1-based) -> its replacement, for lines that changed;
    inserted lines are keyed by minus the number of the line they follow."""
    out: dict[int, str] = {}
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        assert op in ("replace", "insert"), f"lines were deleted: {a[i1:i2]}"
        assert j2 - j1 >= i2 - i1, f"lines were deleted: {a[i1:i2]} -> {b[j1:j2]}"
        for k in range(i2 - i1):  # replaced lines, then what was inserted after them
            out[i1 + k + 1] = b[j1 + k]
        if j2 - j1 > i2 - i1:
            out[-i2] = "".join(b[j1 + i2 - i1 : j2])
    return out


def target(repository: str = PODINFO, policy: str = "podinfo", key: str | None = None) -> Target:
    return Target(repository=repository, policy=policy, helm_values_key=key)


def image(repository: str = PODINFO, tag: str = "5.0.3", digest: str = NEW) -> NewImage:
    return NewImage(repository=repository, tag=tag, digest=digest)


# -- kustomization images -----------------------------------------------------------

# kubectl docs (kustomization "images" field), with a comment and a quoted tag.
KUSTOMIZE_DOCS = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- deployment.yaml
images:
- name: postgres
  newName: my-registry/my-postgres
  newTag: v1
- name: nginx
  newTag: "1.8.0"   # pinned by the platform team
- name: my-demo-app
  newName: my-app
- name: alpine
  digest: sha256:24a0c4b4a4c0eb97a1aabb8e29f18e917d05abfe1b7a7c07857230879ce7d3d3
"""


def test_kustomization_entry_gets_tag_and_digest_and_keeps_its_quoting_and_comment():
    result = edit("overlays/prod/kustomization.yaml", KUSTOMIZE_DOCS, target("nginx"),
                  image("nginx", "1.8.1"))
    assert changed_lines(KUSTOMIZE_DOCS, result.text) == {
        10: '  newTag: "1.8.1"   # pinned by the platform team\n',
        -10: f"  digest: {NEW}\n",
    }
    assert result.changes == (
        'images[1] (kustomization): newTag: 1.8.0 → 1.8.1',
        "images[1] (kustomization): added digest: sha256:bbbbbbbbbbbb…",
    )
    assert result.changed and result.flux_owned == ()


def test_kustomization_entry_matches_by_its_effective_name_newname_first():
    # The workload runs my-registry/my-postgres (postgres renamed): that entry is it.
    result = edit("kustomization.yaml", KUSTOMIZE_DOCS,
                  target("my-registry/my-postgres"), image("my-registry/my-postgres", "v2"))
    assert changed_lines(KUSTOMIZE_DOCS, result.text) == {
        8: "  newTag: v2\n", -8: f"  digest: {NEW}\n"}
    # ... and the name it renames is not what runs any more.
    assert edit("kustomization.yaml", KUSTOMIZE_DOCS, target("postgres"),
                image("postgres", "v2")).text == KUSTOMIZE_DOCS


def test_kustomization_digest_only_entry_keeps_no_tag_when_none_is_tracked():
    result = edit("kustomization.yaml", KUSTOMIZE_DOCS, target("alpine"), image("alpine", ""))
    assert changed_lines(KUSTOMIZE_DOCS, result.text) == {14: f"  digest: {NEW}\n"}


def test_kustomization_entry_gets_new_name_only_when_the_repository_moves():
    moved = image("registry.example:5000/team/nginx", "1.8.1")
    result = edit("kustomization.yaml", KUSTOMIZE_DOCS, target("nginx"), moved)
    assert changed_lines(KUSTOMIZE_DOCS, result.text) == {
        10: '  newTag: "1.8.1"   # pinned by the platform team\n',
        -10: f"  newName: registry.example:5000/team/nginx\n  digest: {NEW}\n",
    }
    renamed = edit("kustomization.yaml", KUSTOMIZE_DOCS, target("my-registry/my-postgres"),
                   image("registry.example:5000/db", "v1"))
    assert changed_lines(KUSTOMIZE_DOCS, renamed.text) == {
        7: "  newName: registry.example:5000/db\n", -8: f"  digest: {NEW}\n"}


def test_kustomization_is_recognised_by_file_name_without_kind():
    text = "images:\n- name: nginx\n  newTag: 1.0.0\n"
    for name in ("kustomization.yaml", "base/kustomization.yml", "Kustomization"):
        assert edit(name, text, target("nginx"), image("nginx", "1.0.1")).changed
    # The same list in another file is not a kustomization.
    assert not edit("images.yaml", text, target("nginx"), image("nginx", "1.0.1")).changed


def test_flow_style_entry_gets_keys_inside_its_braces():
    text = "kind: Kustomization\napiVersion: kustomize.config.k8s.io/v1beta1\n" \
           "images: [{name: nginx, newTag: '1.0'}]\n"
    result = edit("k.yaml", text, target("nginx"), image("nginx", "1.1"))
    assert result.text.splitlines()[2] == f"images: [{{name: nginx, newTag: '1.1', digest: {NEW}}}]"


def test_last_line_without_newline_gets_one_before_the_added_key():
    text = "images:\n- name: nginx\n  newTag: 1.0.0"
    result = edit("kustomization.yaml", text, target("nginx"), image("nginx", "1.0.1"))
    assert result.text == f"images:\n- name: nginx\n  newTag: 1.0.1\n  digest: {NEW}"


def test_crlf_file_keeps_crlf_in_added_lines():
    text = "images:\r\n- name: nginx\r\n  newTag: 1.0.0\r\n"
    result = edit("kustomization.yaml", text, target("nginx"), image("nginx", "1.0.1"))
    assert result.text == f"images:\r\n- name: nginx\r\n  newTag: 1.0.1\r\n  digest: {NEW}\r\n"


def test_flux_kustomization_spec_images_are_edited():
    text = """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: podinfo
  namespace: default
spec:
  images:
    - name: ghcr.io/stefanprodan/podinfo
      newTag: 5.0.0
"""
    result = edit("clusters/podinfo.yaml", text, target(), image())
    assert changed_lines(text, result.text) == {
        9: "      newTag: 5.0.3\n", -9: f"      digest: {NEW}\n"}


def test_entry_under_a_nested_value_cannot_take_a_new_key():
    text = "images:\n- name: nginx\n  extra:\n    a: b\n"
    with pytest.raises(WriteBackError, match="add the key by hand"):
        edit("kustomization.yaml", text, target("nginx"), image("nginx", "1"))


# -- Flux's markers: never edited, reported ------------------------------------------

# Flux's image-update guide: "Kustomize config (kustomization.yaml) example".
FLUX_KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- deployment.yaml
images:
- name: ghcr.io/stefanprodan/podinfo
  newName: ghcr.io/stefanprodan/podinfo # {"$imagepolicy": "flux-system:podinfo:name"}
  newTag: 5.0.0 # {"$imagepolicy": "flux-system:podinfo:tag"}
"""

# Flux's image-update guide: the podinfo Deployment with a whole-reference marker.
FLUX_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: default
spec:
  selector:
    matchLabels:
      app: podinfo
  template:
    metadata:
      labels:
        app: podinfo
    spec:
      containers:
      - name: podinfod
        image: ghcr.io/stefanprodan/podinfo:5.0.0 # {"$imagepolicy": "flux-system:podinfo"}
        ports:
        - containerPort: 9898
"""

# Flux's image-update guide: HelmRelease values with :name and :tag markers.
FLUX_HELMRELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2beta1
kind: HelmRelease
metadata:
  name: podinfo
  namespace: default
spec:
  values:
    image:
      repository: ghcr.io/stefanprodan/podinfo # {"$imagepolicy": "flux-system:podinfo:name"}
      tag: 5.0.0  # {"$imagepolicy": "flux-system:podinfo:tag"}
"""


@pytest.mark.parametrize(("path", "text", "lines"), [
    ("kustomization.yaml", FLUX_KUSTOMIZATION, (7, 8)),
    ("podinfo-deployment.yaml", FLUX_DEPLOYMENT, (17,)),
    ("release.yaml", FLUX_HELMRELEASE, (9, 10)),
])
def test_lines_with_flux_markers_are_never_edited_and_are_reported(path, text, lines):
    result = edit(path, text, target(key="image"), image())
    assert result.text == text and not result.changed
    assert [line.split(":", 1)[0] for line in result.flux_owned] == [f"line {n}" for n in lines]
    assert all('"$imagepolicy"' in line for line in result.flux_owned)


def test_flux_marker_for_another_repository_is_not_reported():
    result = edit("podinfo-deployment.yaml", FLUX_DEPLOYMENT, target("nginx"), image("nginx"))
    assert result == EditResult(text=FLUX_DEPLOYMENT)


def test_a_kustomization_entry_with_one_flux_marked_key_is_left_whole():
    text = "images:\n- name: nginx\n  newTag: 1.0 # {\"$imagepolicy\": \"flux-system:nginx:tag\"}\n"
    result = edit("kustomization.yaml", text, target("nginx"), image("nginx", "1.1"))
    assert result.text == text and result.flux_owned == (
        'line 3: newTag: 1.0 # {"$imagepolicy": "flux-system:nginx:tag"}',)


# -- imagepatch's own markers --------------------------------------------------------

MARKED = """\
apiVersion: tekton.dev/v1beta1
kind: Task
metadata:
  name: golang
spec:
  steps:
    - name: golang
      image: docker.io/golang:1.15.6 # {"$imagepatch": "golang"}
    - name: other
      image: docker.io/golang:1.15.6 # {"$imagepatch": "someone-else"}
    - name: not-golang
      image: docker.io/library/python:3.12 # {"$imagepatch": "golang"}
"""


def test_whole_reference_marker_on_any_kind_pins_the_reference_and_keeps_its_spelling():
    result = edit("task.yaml", MARKED, target("golang", "golang"),
                  image("docker.io/library/golang", "1.15.7"))
    assert changed_lines(MARKED, result.text) == {
        8: f'      image: docker.io/golang:1.15.7@{NEW} # {{"$imagepatch": "golang"}}\n'}
    assert result.changes == (
        "line 8 ($imagepatch golang): docker.io/golang:1.15.6 → "
        "docker.io/golang:1.15.7@sha256:bbbbbbbbbbbb…",)


HELMRELEASE_MARKED = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
spec:
  values:
    image:
      repository: ghcr.io/stefanprodan/podinfo # {"$imagepatch": "podinfo:name"}
      tag: 5.0.0  # {"$imagepatch": "podinfo:tag"}
"""


def test_tag_marker_without_a_digest_marker_carries_the_pin():
    result = edit("release.yaml", HELMRELEASE_MARKED, target(), image())
    assert changed_lines(HELMRELEASE_MARKED, result.text) == {
        9: f'      tag: 5.0.3@{NEW}  # {{"$imagepatch": "podinfo:tag"}}\n'}


def test_tag_marker_with_a_digest_marker_takes_the_plain_tag():
    text = HELMRELEASE_MARKED + '      digest: "" # {"$imagepatch": "podinfo:digest"}\n'
    result = edit("release.yaml", text, target(), image())
    assert changed_lines(text, result.text) == {
        9: '      tag: 5.0.3  # {"$imagepatch": "podinfo:tag"}\n',
        10: f'      digest: "{NEW}" # {{"$imagepatch": "podinfo:digest"}}\n',
    }
    # No tag tracked: the tag field keeps its label, the digest pins.
    untagged = edit("release.yaml", text, target(), image(tag=""))
    assert changed_lines(text, untagged.text) == {
        10: f'      digest: "{NEW}" # {{"$imagepatch": "podinfo:digest"}}\n'}


def test_tag_marker_keeps_the_written_tag_when_none_is_tracked_and_refuses_an_empty_one():
    text = 'tag: "5.0.0@' + OLD + '" # {"$imagepatch": "podinfo:tag"}\n'
    result = edit("values.yaml", text, target(), image(tag=""))
    assert result.text == 'tag: "5.0.0@' + NEW + '" # {"$imagepatch": "podinfo:tag"}\n'
    with pytest.raises(WriteBackError, match="tracks no tag"):
        edit("values.yaml", 'tag: "" # {"$imagepatch": "podinfo:tag"}\n', target(),
             image(tag=""))


def test_name_marker_changes_only_when_the_repository_moves():
    moved = image("registry.example:5000/team/podinfo")
    result = edit("release.yaml", HELMRELEASE_MARKED, target(), moved)
    assert changed_lines(HELMRELEASE_MARKED, result.text) == {
        8: "      repository: registry.example:5000/team/podinfo"
           ' # {"$imagepatch": "podinfo:name"}\n',
        9: f'      tag: 5.0.3@{NEW}  # {{"$imagepatch": "podinfo:tag"}}\n',
    }


def test_tag_marker_beside_another_repository_is_left_alone():
    text = 'image:\n  repository: nginx\n  tag: "1.0" # {"$imagepatch": "podinfo:tag"}\n'
    assert edit("values.yaml", text, target(), image()).text == text


def test_marker_for_another_policy_or_an_unknown_field_or_a_json_comment_is_left_alone():
    text = ('image: ghcr.io/stefanprodan/podinfo:1 # {"$imagepatch": "podinfo:size"}\n'
            'b: ghcr.io/stefanprodan/podinfo:1 # {"$imagepatch": "other"}\n'
            'c: ghcr.io/stefanprodan/podinfo:1 # {"note": "x"}\n'
            'd: ghcr.io/stefanprodan/podinfo:1 # {not json}\n'
            'e: ghcr.io/stefanprodan/podinfo:1 # {"$imagepatch": 3}\n'
            'f: ghcr.io/stefanprodan/podinfo:1 # ["$imagepatch"]\n'
            'g: ghcr.io/stefanprodan/podinfo:1 # {"$imagepatch": "podinfo", "x": 1}\n')
    assert edit("x.yaml", text, target(), image()) == EditResult(text=text)


def test_a_marked_container_image_is_edited_once_by_its_marker():
    text = FLUX_DEPLOYMENT.replace('{"$imagepolicy": "flux-system:podinfo"}',
                                   '{"$imagepatch": "podinfo"}')
    result = edit("d.yaml", text, target(), image())
    assert len(result.changes) == 1 and result.changes[0].startswith("line 17 ($imagepatch")


def test_tag_marker_beside_a_bitnami_registry_and_repository_names_that_image():
    text = ('image:\n  registry: ghcr.io\n  repository: stefanprodan/podinfo\n'
            '  tag: "5.0.0" # {"$imagepatch": "podinfo:tag"}\n')
    result = edit("values.yaml", text, target(), image())
    assert changed_lines(text, result.text) == {
        4: f'  tag: "5.0.3@{NEW}" # {{"$imagepatch": "podinfo:tag"}}\n'}


def test_kustomization_keys_another_policy_marks_are_left_to_it():
    text = ("images:\n- name: nginx\n  newName: nginx # {\"$imagepatch\": \"other:name\"}\n"
            "  newTag: '1' # {\"$imagepatch\": \"other:tag\"}\n"
            "  digest: x # {\"$imagepatch\": \"other:digest\"}\n- just-a-string\n")
    result = edit("kustomization.yaml", text, target("nginx"), image("ghcr.io/x/nginx", "2"))
    assert result == EditResult(text=text)


def test_other_kinds_called_kustomization_are_not_kustomizations():
    text = "apiVersion: example.com/v1\nkind: Kustomization\nimages:\n- name: nginx\n"
    assert not edit("kustomization.yaml", text, target("nginx"), image("nginx")).changed


# -- Helm values ---------------------------------------------------------------------

# A Bitnami chart's values.yaml image block (bitnami/charts, nginx).
BITNAMI_VALUES = """\
## Bitnami NGINX image
## ref: https://hub.docker.com/r/bitnami/nginx/tags/
## @param image.registry [default: REGISTRY_NAME] NGINX image registry
## @param image.repository [default: REPOSITORY_NAME/nginx] NGINX image repository
## @skip image.tag NGINX image tag (immutable tags are recommended)
## @param image.digest NGINX image digest in the way sha256:aa.... Please note this parameter, if set, will override the tag
## @param image.pullPolicy NGINX image pull policy
##
image:
  registry: docker.io
  repository: bitnami/nginx
  tag: 1.27.3-debian-12-r5
  digest: ""
  ## Specify a imagePullPolicy
  pullPolicy: IfNotPresent
  pullSecrets: []
  debug: false
"""


def test_bitnami_values_get_the_digest_key_and_the_plain_tag():
    result = edit("values.yaml", BITNAMI_VALUES, target("bitnami/nginx", key="image"),
                  image("docker.io/bitnami/nginx", "1.27.4-debian-12-r0"))
    assert changed_lines(BITNAMI_VALUES, result.text) == {
        12: "  tag: 1.27.4-debian-12-r0\n", 13: f'  digest: "{NEW}"\n'}


def test_bitnami_values_split_a_moved_repository_into_registry_and_repository():
    result = edit("values.yaml", BITNAMI_VALUES, target("bitnami/nginx", key="image"),
                  image("registry.example:5000/mirror/nginx", "1.27.3-debian-12-r5"))
    assert changed_lines(BITNAMI_VALUES, result.text) == {
        10: "  registry: registry.example:5000\n", 11: "  repository: mirror/nginx\n",
        13: f'  digest: "{NEW}"\n'}


def test_values_without_a_digest_key_get_tag_at_digest():
    text = "replicaCount: 1\nimage:\n  repository: nginx\n  pullPolicy: IfNotPresent\n" \
           "  # Overrides the image tag whose default is the chart appVersion.\n  tag: \"1.16.0\"\n"
    result = edit("values.yaml", text, target("nginx", key="image"), image("nginx", "1.16.1"))
    assert changed_lines(text, result.text) == {6: f'  tag: "1.16.1@{NEW}"\n'}
    # Moved repository: the repository key follows.
    moved = edit("values.yaml", text, target("nginx", key="image"), image("ghcr.io/x/nginx", "1"))
    assert changed_lines(text, moved.text) == {
        3: "  repository: ghcr.io/x/nginx\n", 6: f'  tag: "1@{NEW}"\n'}


def test_values_without_tag_key_get_one_and_an_untagged_image_is_refused():
    text = "app:\n  image:\n    repository: nginx\n    pullPolicy: Always\n"
    result = edit("values.yaml", text, target("nginx", key="app.image"), image("nginx", "1.2"))
    assert changed_lines(text, result.text) == {-4: f"    tag: 1.2@{NEW}\n"}
    with pytest.raises(WriteBackError, match="tracks no tag"):
        edit("values.yaml", text, target("nginx", key="app.image"), image("nginx", ""))


def test_values_string_and_other_images_and_missing_keys():
    text = "web:\n  image: nginx:1.2 # the web server\nother:\n  image: redis:7\n"
    result = edit("values.yaml", text, target("nginx", key="web.image"), image("nginx", "1.3"))
    assert changed_lines(text, result.text) == {2: f"  image: nginx:1.3@{NEW} # the web server\n"}
    assert not edit("values.yaml", text, target("nginx", key="other.image"), image("nginx")).changed
    assert not edit("values.yaml", text, target("nginx", key="nope.image"), image("nginx")).changed
    assert not edit("values.yaml", text, target("nginx"), image("nginx")).changed  # no key named
    other = "image:\n  repository: redis\n  tag: '7'\n"
    assert not edit("values.yaml", other, target("nginx", key="image"), image("nginx")).changed


def test_helmrelease_inline_values_are_a_values_file():
    text = FLUX_HELMRELEASE.replace(' # {"$imagepolicy": "flux-system:podinfo:name"}', "")
    text = text.replace('  # {"$imagepolicy": "flux-system:podinfo:tag"}', "")
    result = edit("release.yaml", text, target(key="image"), image())
    assert changed_lines(text, result.text) == {10: f"      tag: 5.0.3@{NEW}\n"}
    # The same block at the document's root of a HelmRelease is not its values.
    assert not edit("release.yaml", text.replace("spec:\n  values:\n", "spec:\n  other:\n"),
                    target(key="image"), image()).changed


def test_values_with_a_flux_marked_tag_are_left_whole():
    result = edit("release.yaml", FLUX_HELMRELEASE, target(key="image"), image())
    assert not result.changed and len(result.flux_owned) == 2


def test_values_mapping_without_repository_pins_tag_and_keeps_marked_keys():
    text = 'image:\n  tag: "1" # {"$imagepatch": "other:tag"}\n  digest: x\n'
    result = edit("values.yaml", text, target("nginx", key="image"), image("nginx", "2"))
    assert changed_lines(text, result.text) == {3: f"  digest: {NEW}\n"}
    marked = 'image:\n  tag: "1"\n  digest: x # {"$imagepatch": "other:digest"}\n'
    result = edit("values.yaml", marked, target("nginx", key="image"), image("nginx", "2"))
    assert changed_lines(marked, result.text) == {2: '  tag: "2"\n'}
    tagged = 'image:\n  tag: "1" # {"$imagepatch": "other:tag"}\n'
    assert not edit("values.yaml", tagged, target("nginx", key="image"), image("nginx")).changed
    repo = 'image:\n  repository: nginx # {"$imagepatch": "other:name"}\n  tag: "1"\n'
    moved = edit("values.yaml", repo, target("nginx", key="image"), image("ghcr.io/x/nginx", "2"))
    assert changed_lines(repo, moved.text) == {3: f'  tag: "2@{NEW}"\n'}


def test_values_string_with_a_marker_is_left_to_it():
    flux = 'image: nginx:1 # {"$imagepolicy": "flux-system:nginx"}\n'
    result = edit("values.yaml", flux, target("nginx", key="image"), image("nginx"))
    assert result.text == flux and len(result.flux_owned) == 1
    other = 'image: nginx:1 # {"$imagepatch": "other"}\n'
    assert not edit("values.yaml", other, target("nginx", key="image"), image("nginx")).changed


# -- plain manifests -----------------------------------------------------------------

MANIFESTS = """\
# The app and its jobs.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: 'registry.example:5000/team/app:1.0'
      containers:
        - name: app
          image: registry.example:5000/team/app:1.0@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
        - name: sidecar
          image: registry.example:5000/team/app-sidecar:1.0
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: job
            image: registry.example:5000/team/app
...
---
apiVersion: v1
kind: Pod
metadata: {name: debug}
spec:
  containers: [{name: debug, image: "registry.example:5000/team/app:1.0"}]
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: canary
spec:
  template:
    spec:
      containers:
      - name: app
        image: registry.example:5000/team/app:0.9
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: not-a-pod
data:
  image: registry.example:5000/team/app:1.0
---
"""


def test_every_pod_template_container_of_the_repository_is_pinned():
    app = "registry.example:5000/team/app"
    result = edit("app.yaml", MANIFESTS, target(app), image(app, "1.1"))
    ref = f"{app}:1.1@{NEW}"
    assert changed_lines(MANIFESTS, result.text) == {
        11: f"          image: '{ref}'\n",
        14: f"          image: {ref}\n",
        29: f"            image: {ref}\n",
        36: f'  containers: [{{name: debug, image: "{ref}"}}]\n',
        47: f"        image: {ref}\n",
    }
    assert result.changes[0] == (
        "Deployment/app init container migrate: registry.example:5000/team/app:1.0 → "
        "registry.example:5000/team/app:1.1@sha256:bbbbbbbbbbbb…")
    assert "CronJob/nightly container job" in result.changes[2]


def test_a_file_already_pinned_declares_the_image_without_changes():
    app = "registry.example:5000/team/app"
    once = edit("app.yaml", MANIFESTS, target(app), image(app, "1.1"))
    again = edit("app.yaml", once.text, target(app), image(app, "1.1"))
    assert once.declares and again.declares and not again.changed
    flux = edit("podinfo-deployment.yaml", FLUX_DEPLOYMENT, target(), image())
    assert not flux.declares and flux.flux_owned


def test_no_match_returns_the_same_text_object_and_no_changes():
    result = edit("app.yaml", MANIFESTS, target("nginx"), image("nginx"))
    assert result.text is MANIFESTS and result == EditResult(text=MANIFESTS)


def test_a_file_that_cannot_name_the_image_is_not_even_parsed():
    # Not YAML at all, but it names neither the image nor a marker nor the values key.
    text = "{{ .Values.unrelated }}: [\n"
    result = edit("chart/templates/x.yaml", text, target("nginx", key="web.image"),
                  image("nginx"))
    assert result == EditResult(text=text) and result.skipped is None
    assert edit("x.yaml", text.replace("unrelated", "image"), target("nginx", key="web.image"),
                image("nginx")).skipped is not None


def test_workloads_without_pod_specs_or_names_are_skipped_quietly():
    text = "kind: Deployment\nspec: {}\n---\nkind: Job\nspec:\n  template:\n    spec:\n" \
           "      containers:\n      - image: nginx:1\n      - {name: x}\n---\n- a\n---\nplain\n"
    result = edit("x.yaml", text, target("nginx"), image("nginx", "2"))
    assert result.changes == ("Job/ container ?: nginx:1 → nginx:2@sha256:bbbbbbbbbbbb…",)


def test_templated_images_are_not_references_and_are_skipped():
    text = "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: nginx:${TAG}\n"
    assert not edit("pod.yaml", text, target("nginx"), image("nginx")).changed


def test_byte_order_mark_and_non_ascii_text_keep_their_offsets():
    text = "\ufeffkind: Pod\nspec:\n  containers:\n  - name: é\n    image: nginx:1  # ünï\n"
    result = edit("pod.yaml", text, target("nginx"), image("nginx", "2"))
    assert result.text == text.replace("nginx:1", f"nginx:2@{NEW}")


def test_anchored_image_is_edited_once():
    text = "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: &img nginx:1\n" \
           "  - name: b\n    image: *img\n"
    result = edit("pod.yaml", text, target("nginx"), image("nginx", "2"))
    assert changed_lines(text, result.text) == {5: f"    image: &img nginx:2@{NEW}\n"}
    assert len(result.changes) == 1


@pytest.mark.parametrize(("path", "text", "expected"), [
    ("kustomization.yaml", 'images:\n- name: nginx\n  digest:\n  newTag: "1"\n',
     f'images:\n- name: nginx\n  digest: {NEW}\n  newTag: "2"\n'),
    ("kustomization.yaml", "images:\n- name: nginx\n  newTag:   # none yet\n",
     f'images:\n- name: nginx\n  newTag: "2"   # none yet\n  digest: {NEW}\n'),
    ("kustomization.yaml", "images:\n- {name: nginx, newTag: }\n",
     f'images:\n- {{name: nginx, newTag: "2", digest: {NEW} }}\n'),
    ("values.yaml", "image:\n  repository: nginx\n  tag:\n",
     f"image:\n  repository: nginx\n  tag: 2@{NEW}\n"),
    ("values.yaml", "image:\n  repository: nginx\n  tag: ''\n",
     f"image:\n  repository: nginx\n  tag: '2@{NEW}'\n"),
])
def test_empty_values_are_filled_after_their_colon(path, text, expected):
    result = edit(path, text, target("nginx", key="image"), image("nginx", "2"))
    assert result.text == expected
    assert yaml.safe_load(result.text) is not None


def test_an_empty_value_write_back_cannot_place_is_refused():
    node = yaml.compose("[nginx, ]").value[0]
    node.start_mark.index = node.end_mark.index = 0
    with pytest.raises(WriteBackError, match="empty"):
        yamltext.replace_scalar("[nginx, ]", node, "x", where="it")


def test_explicitly_tagged_scalar_keeps_its_tag():
    text = "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: !!str nginx:1\n"
    result = edit("pod.yaml", text, target("nginx"), image("nginx", "2"))
    assert result.text.endswith(f"image: !!str nginx:2@{NEW}\n")


def test_block_scalar_image_is_refused_with_a_reason():
    text = "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: >-\n      nginx:1\n"
    with pytest.raises(WriteBackError, match="block scalar"):
        edit("pod.yaml", text, target("nginx"), image("nginx", "2"))


def test_text_that_is_not_yaml_is_skipped_and_says_why():
    # A Helm chart's template: a .yaml file that only Helm can read.
    template = """\
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        - name: {{ .Chart.Name }}
          {{- with .Values.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
"""
    result = edit("chart/templates/deployment.yaml", template, target(key="image"), image())
    assert result.text is template and not result.changed
    assert result.skipped is not None
    assert result.skipped.startswith("chart/templates/deployment.yaml is not valid YAML")
    assert edit("values.yaml", "a: 1\n", target(), image()).skipped is None


# -- values and references -----------------------------------------------------------


@pytest.mark.parametrize(("value", "style", "written"), [
    ("1.2", None, '"1.2"'),
    ("10", None, '"10"'),
    ("on", None, '"on"'),
    ("2024-01-02", None, '"2024-01-02"'),
    ("v1.2", None, "v1.2"),
    ("it's", "'", "'it''s'"),
    ('a"b\\c', '"', '"a\\"b\\\\c"'),
    ("a b", None, '"a b"'),
])
def test_scalars_are_written_so_yaml_reads_back_the_same_string(value, style, written):
    assert format_scalar(value, style) == written


def test_split_reference_follows_the_registry_port_rule():
    assert split_reference("localhost:5000/app") == ("localhost:5000/app", "", "")
    assert split_reference(f"localhost:5000/app:1@{OLD}") == ("localhost:5000/app", "1", OLD)
    assert split_reference(f"app@{OLD}") == ("app", "", OLD)


def test_new_image_and_target_are_validated():
    assert image(tag="").reference() == f"{PODINFO}@{NEW}"
    assert image().reference() == f"{PODINFO}:5.0.3@{NEW}"
    for bad in (dict(repository="nginx:1"), dict(repository="Bad/Name"), dict(tag="-x"),
                dict(digest="sha256:abc"), dict(repository=f"nginx@{OLD}")):
        with pytest.raises(WriteBackError):
            image(**bad)
    for bad_target in (dict(repository="a b/x"), dict(policy="a:b"), dict(policy=""),
                       dict(key=""), dict(key="a..b")):
        with pytest.raises(WriteBackError):
            target(**bad_target)
    assert Target("nginx", "p", "image") == Target(repository="nginx", policy="p",
                                                   helm_values_key="image")


# -- properties ----------------------------------------------------------------------

FILES = [("kustomization.yaml", KUSTOMIZE_DOCS), ("kustomization.yaml", FLUX_KUSTOMIZATION),
         ("d.yaml", FLUX_DEPLOYMENT), ("release.yaml", FLUX_HELMRELEASE),
         ("release.yaml", HELMRELEASE_MARKED), ("task.yaml", MARKED),
         ("values.yaml", BITNAMI_VALUES), ("app.yaml", MANIFESTS)]
REPOSITORIES = ["nginx", "postgres", "my-registry/my-postgres", "alpine", PODINFO, "golang",
                "bitnami/nginx", "registry.example:5000/team/app", "docker.io/library/golang"]
tags = st.sampled_from(["", "1.0", "5.0.3", "v2-rc.1", "latest"])
digests = st.sampled_from([OLD, NEW, "sha256:" + "c" * 64])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(FILES), st.sampled_from(REPOSITORIES), st.sampled_from(REPOSITORIES),
       tags, digests)
def test_editing_twice_is_editing_once_and_only_changes_lines(file, current, moved, tag, digest):
    path, text = file
    tgt = Target(repository=current, policy="podinfo", helm_values_key="image")
    new = NewImage(repository=moved, tag=tag, digest=digest)
    try:
        once = edit(path, text, tgt, new)
    except WriteBackError as exc:
        assert "tracks no tag" in str(exc)
        return
    assert once.changed == (once.text != text)
    changed_lines(text, once.text)  # no line deleted, none split
    twice = edit(path, once.text, tgt, new)
    assert twice.text == once.text and not twice.changed
    assert once.declares or not once.changed
    if image_name(current) == image_name(moved):
        assert twice.declares == once.declares


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(FILES), st.text(alphabet="abcdefghij", min_size=1, max_size=8))
def test_a_repository_the_file_does_not_name_leaves_it_byte_identical(file, name):
    path, text = file
    result = edit(path, text, Target(repository=f"nowhere.example/{name}", policy="nobody"),
                  NewImage(repository=f"nowhere.example/{name}", tag="1", digest=NEW))
    assert result.text is text and not result.changed and not result.declares


@pytest.mark.parametrize(("path", "text"), [*FILES, ("crlf.yaml", MANIFESTS.replace("\n", "\r\n")),
                                            ("bom.yaml", "\ufeff" + MANIFESTS)])
def test_libyaml_and_pure_python_composers_find_the_same_places(monkeypatch, path, text):
    app = "registry.example:5000/team/app"
    cases = [(Target(repository=r, policy="podinfo", helm_values_key="image"), image(r, "9"))
             for r in (app, PODINFO, "nginx", "bitnami/nginx", "golang")]
    fast = [edit(path, text, t, n) for t, n in cases]
    monkeypatch.setattr(yamltext, "_LOADER", yaml.SafeLoader)
    assert [edit(path, text, t, n) for t, n in cases] == fast


containers = st.lists(st.tuples(
    st.sampled_from(["app", "side", "init"]),
    st.sampled_from(["registry.example:5000/team/app:1.0", "registry.example:5000/team/app",
                     f"registry.example:5000/team/app@{OLD}", "nginx:1.27", "busybox"]),
), min_size=1, max_size=4)


@settings(max_examples=120, deadline=None)
@given(containers, st.booleans(), st.sampled_from([2, 4]), st.sampled_from([None, "'", '"']),
       st.sampled_from(["", "9.1", "2024-01-02"]))
def test_the_edited_file_reads_back_as_the_intended_data(items, flow, indent, style, tag):
    """Whatever style the manifest is written in, YAML reads back exactly the input with
    the matching images pinned, and nothing else changed."""
    app = "registry.example:5000/team/app"
    data = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
            "spec": {"replicas": 2, "template": {"spec": {
                "containers": [{"name": n, "image": i, "ports": [{"containerPort": 80}]}
                               for n, i in items]}}}}
    text = yaml.safe_dump(data, default_flow_style=flow, indent=indent, default_style=style,
                          sort_keys=False)
    result = edit("deploy.yaml", text, target(app), image(app, tag))
    for container in data["spec"]["template"]["spec"]["containers"]:
        if image_name(container["image"]) == app:
            container["image"] = f"{app}{':' + tag if tag else ''}@{NEW}"
    assert yaml.safe_load(result.text) == data


entries = st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(["nginx", "docker.io/library/nginx", "redis", "ghcr.io/o/app"])},
    optional={"newTag": st.sampled_from(["1.0", "v2", ""]),
              "digest": st.sampled_from([OLD, ""])},
), min_size=1, max_size=3)


@settings(max_examples=120, deadline=None)
@given(entries, st.booleans(), st.sampled_from([None, "'", '"']), st.sampled_from(["", "1.1"]))
def test_an_edited_kustomization_reads_back_as_the_intended_data(items, flow, style, tag):
    data = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["deployment.yaml"], "images": items}
    text = yaml.safe_dump(data, default_flow_style=flow, default_style=style, sort_keys=False)
    result = edit("kustomization.yaml", text, target("nginx"), image("nginx", tag))
    for entry in data["images"]:
        if image_name(entry["name"]) == "docker.io/library/nginx":
            if tag:
                entry["newTag"] = tag
            entry["digest"] = NEW
    assert yaml.safe_load(result.text) == data
