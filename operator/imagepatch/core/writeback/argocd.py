"""Argo CD's parameter-override file, ``.argocd-source-<app>.yaml``, written as Argo CD reads it.

Argo CD's repo-server reads ``.argocd-source.yaml`` and then
``.argocd-source-<app>.yaml`` in an Application's source path and applies each
as a JSON merge patch over the Application's ``spec.source``
(``mergeSourceParameters`` in ``reposerver/repository/repository.go``).
``<app>`` is the Application's instance name: its name when it lives in Argo
CD's own namespace, ``<namespace>_<name>`` otherwise (apps in any namespace).
A merge patch *replaces* lists, so the file must hold every image or
parameter the override needs; Argo CD Image Updater therefore reads the file,
merges its entries in, and writes it back, and so does this module:

- **kustomize**: ``kustomize.images`` is a list of Argo CD ``KustomizeImage``
  strings (``[<name>=]<image>[:<tag>][@<digest>]``, passed to ``kustomize
  edit set image``). The entry whose name (before ``=``, else the image's
  own name) is the target repository becomes ``repo:tag@digest``, written
  ``<name>=<ref>`` when the repository moves or the entry already used that
  form, and keeping the entry's spelling of the name otherwise (kustomize
  matches image names as text: ``nginx`` is not ``docker.io/library/nginx``);
  without one, an entry is appended. Other entries stay as they are.
- **helm**: ``helm.parameters`` is a list of ``{name, value, forceString}``.
  The image parameter (default ``image.repository``) gets the repository and
  the tag parameter (default ``image.tag``) ``tag@digest``, both with
  ``forceString: true`` (``--set-string``: a tag like ``1.10`` stays a string).
  Image Updater writes the key as ``forcestring``; Argo CD decodes the file
  with Go's ``encoding/json``, whose field names match case-insensitively, so
  both spellings work, and an existing entry keeps its own.

The file is machine-owned, so it is loaded and dumped with ruamel.yaml's
round-trip mode (its comments and key order survive; its indentation is
ruamel's). Only Argo CD reads it: ``argocd_on_flux`` says why ``argoCD``
cannot apply to a workload Flux delivers. Pure: text in, text out.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from imagepatch.core import gitops
from imagepatch.core.writeback.edit import image_name, split_reference
from imagepatch.core.writeback.model import NewImage, Target, WriteBackError

__all__ = ["argocd_on_flux", "argocd_source_path", "edit_argocd_source"]

SOURCE_TYPES = ("kustomize", "helm")


def argocd_on_flux(owner: gitops.Owner | None) -> str | None:
    """What to fix when a policy with ``gitWriteBack.argoCD`` meets a workload Flux
    delivers (its ``kustomize.toolkit.fluxcd.io/*`` or ``helm.toolkit.fluxcd.io/*``
    labels), or None. Flux never reads an Argo CD override file: writing one would
    change nothing, and rewriting the manifests instead is not what the policy says."""
    if owner is None or owner.tool not in (gitops.Tool.FLUX_KUSTOMIZATION,
                                           gitops.Tool.FLUX_HELM_RELEASE):
        return None
    return (f"{owner.describe()} delivers this workload, but the policy sets "
            "spec.rollout.gitWriteBack.argoCD: Flux never reads Argo CD's "
            ".argocd-source-<app>.yaml override file. Remove argoCD from the policy (imagepatch "
            "then edits the manifests Flux applies), or select only Argo CD Applications' "
            "workloads with it")


def argocd_source_path(app_name: str, app_namespace: str, argocd_namespace: str) -> str:
    """The override file's name (relative to the source path) for an Application."""
    if app_namespace and app_namespace != argocd_namespace:
        return f".argocd-source-{app_namespace}_{app_name}.yaml"
    return f".argocd-source-{app_name}.yaml"


def edit_argocd_source(
    text: str | None,
    *,
    source_type: str,
    target: Target,
    new: NewImage,
    helm_image_parameter: str = "image.repository",
    helm_tag_parameter: str = "image.tag",
) -> str:
    """The override file's new text: ``text`` (None or empty: no file yet) with the
    target's image pinned to ``new``, every other entry kept."""
    if source_type not in SOURCE_TYPES:
        raise WriteBackError(f"Argo CD source type {source_type!r} is not one of {SOURCE_TYPES}")
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # a pinned reference stays on its key's line, never folded
    try:
        data = yaml.load(text) if text else None
    except YAMLError as exc:
        problem = " ".join(str(exc).split())[:300]
        raise WriteBackError(f"the Argo CD override file is not valid YAML: {problem}") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise WriteBackError("the Argo CD override file is not a YAML mapping")
    if source_type == "kustomize":
        images = _list(data, "kustomize", "images")
        _set_kustomize_image(images, target, new)
    else:
        parameters = _list(data, "helm", "parameters")
        existing = _parameter(parameters, helm_tag_parameter)
        current = str(existing.get("value", "")) if existing is not None else ""
        tag = new.tag or current.partition("@")[0]
        if not tag:
            raise WriteBackError(
                f"Helm parameter {helm_tag_parameter!r} holds a tag, but the image tracks no"
                " tag; there is no tag to pin with the digest")
        _set_parameter(parameters, helm_image_parameter, new.repository)
        _set_parameter(parameters, helm_tag_parameter, f"{tag}@{new.digest}")
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _list(data: CommentedMap, section: str, key: str) -> list[Any]:
    """``data[section][key]`` as a list, created when missing."""
    part = data.setdefault(section, CommentedMap())
    if not isinstance(part, dict):
        raise WriteBackError(f"the Argo CD override file's {section!r} is not a mapping")
    found = part.setdefault(key, CommentedSeq())
    if not isinstance(found, list):
        raise WriteBackError(f"the Argo CD override file's {section}.{key} is not a list")
    return found


def _set_kustomize_image(images: list[Any], target: Target, new: NewImage) -> None:
    target_name = image_name(target.repository)
    moved = image_name(new.repository) != target_name
    for index, entry in enumerate(images):
        if not isinstance(entry, str):
            continue
        name, equals, _image = entry.partition("=")
        if not equals:
            name = split_reference(entry)[0]
        if image_name(name) != target_name:
            continue
        if equals or moved:
            images[index] = f"{name}={new.reference()}"
        else:  # the same image: keep the entry's spelling, kustomize matches names as text
            tag = f":{new.tag}" if new.tag else ""
            images[index] = f"{name}{tag}@{new.digest}"
        return
    # No entry yet: name the image as the workload runs it (the resources' spelling is
    # not known here; an entry written by hand first decides it).
    images.append(f"{target.repository}={new.reference()}" if moved else new.reference())


def _parameter(parameters: list[Any], name: str) -> Any:
    return next((p for p in parameters if isinstance(p, dict) and p.get("name") == name), None)


def _set_parameter(parameters: list[Any], name: str, value: str) -> None:
    entry = _parameter(parameters, name)
    if entry is None:
        entry = CommentedMap(name=name)
        parameters.append(entry)
    entry["value"] = value
    spelling = next((k for k in entry if str(k).lower() == "forcestring"), "forceString")
    entry[spelling] = True
