"""core/writeback Argo CD override file: named and shaped as Argo CD's repo-server reads it.

The inputs are the examples of Argo CD's "Parameter Overrides / Store
Overrides In Git" documentation and the files Argo CD Image Updater writes
(``forcestring`` spelled lowercase, as its yaml.v2 marshalling does). Argo CD
applies the file as a JSON merge patch, which replaces lists, so every entry
already in the file must survive the edit.
"""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from imagepatch.core.writeback import (
    NewImage,
    Target,
    WriteBackError,
    argocd_source_path,
    edit_argocd_source,
)

NEW = "sha256:" + "b" * 64
E2E = "quay.io/argoprojlabs/argocd-e2e-container"


def load(text: str):
    return YAML(typ="safe").load(text)


def target(repository: str = E2E) -> Target:
    return Target(repository=repository, policy="p")


def new(repository: str = E2E, tag: str = "0.2") -> NewImage:
    return NewImage(repository=repository, tag=tag, digest=NEW)


def test_file_name_is_the_app_or_namespace_underscore_app():
    assert argocd_source_path("guestbook", "argocd", "argocd") == ".argocd-source-guestbook.yaml"
    assert argocd_source_path("guestbook", "", "argocd") == ".argocd-source-guestbook.yaml"
    assert argocd_source_path("guestbook", "team-a", "argocd") == \
        ".argocd-source-team-a_guestbook.yaml"


# Argo CD docs, "Store Overrides In Git": a kustomize override.
DOCS_KUSTOMIZE = """\
kustomize:
  images:
    - quay.io/argoprojlabs/argocd-e2e-container:0.1
"""


def test_kustomize_entry_of_the_image_is_replaced_by_the_pinned_reference():
    text = edit_argocd_source(DOCS_KUSTOMIZE, source_type="kustomize", target=target(), new=new())
    assert load(text) == {"kustomize": {"images": [f"{E2E}:0.2@{NEW}"]}}


def test_kustomize_other_images_and_sections_are_kept_and_a_new_image_is_appended():
    existing = """\
# written by hand
helm:
  parameters: []
kustomize:
  namePrefix: dev-
  images:
  - nginx=registry.example/nginx:1.2   # the web tier
  - redis:7
"""
    text = edit_argocd_source(existing, source_type="kustomize", target=target(), new=new())
    assert "# written by hand" in text and "# the web tier" in text
    assert load(text) == {"helm": {"parameters": []}, "kustomize": {
        "namePrefix": "dev-",
        "images": ["nginx=registry.example/nginx:1.2", "redis:7", f"{E2E}:0.2@{NEW}"]}}
    # The named form keeps its name; editing again changes nothing.
    again = edit_argocd_source(text, source_type="kustomize", target=target("nginx"),
                               new=new("registry.example/nginx", "1.3"))
    assert load(again)["kustomize"]["images"][0] == f"nginx=registry.example/nginx:1.3@{NEW}"
    assert edit_argocd_source(again, source_type="kustomize", target=target("nginx"),
                              new=new("registry.example/nginx", "1.3")) == again


def test_kustomize_entry_keeps_its_spelling_of_the_name():
    text = "kustomize:\n  images:\n  - nginx:1.2\n"
    out = edit_argocd_source(text, source_type="kustomize", target=target("nginx"),
                             new=new("docker.io/library/nginx", "1.3"))
    assert load(out)["kustomize"]["images"] == [f"nginx:1.3@{NEW}"]
    untagged = edit_argocd_source(text, source_type="kustomize", target=target("nginx"),
                                  new=new("docker.io/library/nginx", ""))
    assert load(untagged)["kustomize"]["images"] == [f"nginx@{NEW}"]


def test_kustomize_moved_repository_is_written_as_name_equals_reference():
    moved = new("registry.example:5000/mirror/e2e", "0.2")
    text = edit_argocd_source(DOCS_KUSTOMIZE, source_type="kustomize", target=target(), new=moved)
    assert load(text)["kustomize"]["images"] == [
        f"{E2E}=registry.example:5000/mirror/e2e:0.2@{NEW}"]
    fresh = edit_argocd_source(None, source_type="kustomize", target=target(), new=moved)
    assert load(fresh)["kustomize"]["images"] == [
        f"{E2E}=registry.example:5000/mirror/e2e:0.2@{NEW}"]


def test_kustomize_file_created_when_there_is_none():
    for text in (None, ""):
        out = edit_argocd_source(text, source_type="kustomize", target=target(), new=new(tag=""))
        assert load(out) == {"kustomize": {"images": [f"{E2E}@{NEW}"]}}


# Argo CD docs, "Store Overrides In Git": a helm override; and Image Updater's file shape.
DOCS_HELM = """\
helm:
  parameters:
  - name: image.tag
    value: v1.2
"""
IMAGE_UPDATER_HELM = """\
helm:
  parameters:
  - name: image.name
    value: quay.io/argoprojlabs/argocd-e2e-container
    forcestring: true
  - name: image.tag
    value: "0.1"
    forcestring: true
  - name: replicaCount
    value: "2"
"""


def test_helm_parameters_are_set_with_force_string_and_others_kept():
    out = load(edit_argocd_source(DOCS_HELM, source_type="helm", target=target(), new=new()))
    assert out == {"helm": {"parameters": [
        {"name": "image.tag", "value": f"0.2@{NEW}", "forceString": True},
        {"name": "image.repository", "value": E2E, "forceString": True},
    ]}}


def test_helm_image_updater_file_keeps_its_spelling_and_parameter_names():
    text = edit_argocd_source(IMAGE_UPDATER_HELM, source_type="helm", target=target(),
                              new=new(tag=""), helm_image_parameter="image.name")
    assert load(text) == {"helm": {"parameters": [
        {"name": "image.name", "value": E2E, "forcestring": True},
        {"name": "image.tag", "value": f"0.1@{NEW}", "forcestring": True},
        {"name": "replicaCount", "value": "2"},
    ]}}
    assert edit_argocd_source(text, source_type="helm", target=target(), new=new(tag=""),
                              helm_image_parameter="image.name") == text


def test_helm_without_any_tag_to_pin_is_refused():
    with pytest.raises(WriteBackError, match="tracks no tag"):
        edit_argocd_source(None, source_type="helm", target=target(), new=new(tag=""))


@pytest.mark.parametrize(("text", "source_type", "problem"), [
    ("a: [", "kustomize", "not valid YAML"),
    ("- a\n", "kustomize", "not a YAML mapping"),
    ("kustomize: 3\n", "kustomize", "'kustomize' is not a mapping"),
    ("helm:\n  parameters: {}\n", "helm", "helm.parameters is not a list"),
    (None, "jsonnet", "not one of"),
])
def test_unusable_files_and_types_are_refused_with_what_is_wrong(text, source_type, problem):
    with pytest.raises(WriteBackError, match=problem):
        edit_argocd_source(text, source_type=source_type, target=target(), new=new())


def test_non_string_kustomize_entries_are_kept():
    text = "kustomize:\n  images:\n  - {odd: entry}\n"
    out = load(edit_argocd_source(text, source_type="kustomize", target=target(), new=new()))
    assert out["kustomize"]["images"] == [{"odd": "entry"}, f"{E2E}:0.2@{NEW}"]


def test_a_long_pinned_reference_stays_on_its_line():
    text = edit_argocd_source(None, source_type="helm", target=target(),
                              new=new(tag="1.0"), helm_tag_parameter="app.tag")
    assert f"    value: 1.0@{NEW}\n" in text
    kustomized = edit_argocd_source(None, source_type="kustomize", target=target(), new=new())
    assert f"  - {E2E}:0.2@{NEW}\n" in kustomized


def test_argo_cd_settings_on_a_flux_workload_say_what_to_fix():
    from imagepatch.core import gitops
    from imagepatch.core.writeback import argocd_on_flux

    def owner(tool: gitops.Tool) -> gitops.Owner:
        return gitops.Owner(tool=tool, namespace="flux-system", name="apps", evidence="label")

    assert argocd_on_flux(None) is None
    assert argocd_on_flux(owner(gitops.Tool.ARGO_CD_APPLICATION)) is None
    for tool in (gitops.Tool.FLUX_KUSTOMIZATION, gitops.Tool.FLUX_HELM_RELEASE):
        why = argocd_on_flux(owner(tool))
        assert why is not None and f"{tool} flux-system/apps" in why
        assert "spec.rollout.gitWriteBack.argoCD" in why and "Remove argoCD" in why
