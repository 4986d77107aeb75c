"""Write a digest-pinned image into the YAML file that declares it.

``edit(path, text, target, new)`` finds every place in one file that sets the
image ``target.repository`` (compared normalized, by ``core.images``'s
distribution-reference rules, so ``nginx`` and ``docker.io/library/nginx``
are one image) and pins it to ``new``. Places, in the order they are looked
for:

1. **imagepatch's setter markers**, on any value in any YAML file, shaped
   like Flux's: ``# {"$imagepatch": "<policy>"}`` (the whole reference:
   ``repo:tag@digest``), ``<policy>:name`` (the repository), ``<policy>:digest``
   (the digest) and ``<policy>:tag``. Flux's ``:tag`` setter writes the tag
   alone; imagepatch writes the tag alone only when the file also carries a
   ``:digest`` marker of the policy (the pin lives there), and ``tag@digest``
   otherwise, so a chart that renders ``repo:tag`` renders a pinned
   ``repo:tag@digest``. A marker naming another policy is left alone, and so is
   a marked value whose mapping names another repository (a sibling
   ``repository``/``name``/``newName``/``image`` key or ``:name`` marker).
2. **A kustomization's ``images:`` entry** (a file named ``kustomization.yaml``,
   ``kustomization.yml`` or ``Kustomization``, a ``kustomize.config.k8s.io``
   Kustomization, or a Flux ``kustomize.toolkit.fluxcd.io`` Kustomization's
   ``spec.images``) whose effective name (``newName``, else ``name``) is the
   repository: ``newName`` is set only when the repository moves, ``newTag``
   to the tracked tag (left as it is when none is tracked), ``digest`` to the
   digest; missing keys are added after the entry's last line. kustomize's
   image transformer (``api/filters/imagetag/updater.go``) writes
   ``name:newTag@digest`` when both are set (releases before v4.5 dropped the
   tag): either way the digest pins the image.
3. **A Helm values file** at ``target.helm_values_key`` (also under a Flux
   HelmRelease's ``spec.values``), when the policy names the key: a string
   ``repo:tag`` becomes ``repo:tag@digest``; a mapping follows the common
   chart conventions: with a ``digest`` key (Bitnami's ``image.digest``, which
   its templates prefer over the tag) the digest goes there and ``tag`` keeps
   the plain tag; without one, ``tag`` becomes ``tag@digest`` (a chart
   rendering ``repository:tag`` then renders a pinned reference; a missing
   ``tag`` is added). ``repository`` (with ``registry``, Bitnami-style, when
   present) must name the image, and changes only when the repository moves.
4. **Plain manifests**: the ``image`` of every container and init container in
   the pod template of a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
   CronJob (``jobTemplate``), Pod or Argo Rollout, set to ``repo:tag@digest``
   (the repository keeps its spelling in the file when only tag or digest
   change).

Lines carrying Flux's ``# {"$imagepolicy": …}`` marker belong to Flux's image
automation: they are never edited, and a place with one on any of its lines
(a kustomization entry whose ``newTag`` Flux sets, say) is left whole; each is
reported in ``flux_owned`` when it concerns this repository. A value with an
imagepatch marker is edited only as the marker says, never again as part of
a place. The text is edited by splicing (``yamltext.py``): a file with nothing
to change comes back byte-identical, and an edit changes exactly the lines of
the values it pins. Editing twice is editing once. A file that is not YAML (a
Helm chart's template) comes back unchanged, ``skipped`` saying why; a value
that cannot be pinned (a tag-only field when no tag is tracked, a block
scalar) raises ``WriteBackError`` naming the file and the field. A file that
spells neither the repository's last path component, nor a marker, nor the
Helm values key cannot declare the image and is not parsed at all: most files
of a repository are passed over for the price of a substring search.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from imagepatch.core.images import InvalidImageReference, parse_image
from imagepatch.core.writeback import yamltext
from imagepatch.core.writeback.model import (
    EditResult,
    NewImage,
    Target,
    WriteBackError,
    short,
)
from imagepatch.core.writeback.yamltext import Splice

__all__ = ["edit", "image_name", "split_reference"]

KUSTOMIZATION_FILES = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})
# Kinds whose pod template sits at spec.template.spec.
_TEMPLATE_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout"})
_MARKER_FIELDS = ("tag", "digest", "name")
# Keys that name the image a marked tag or digest belongs to.
_NAMING_KEYS = ("repository", "name", "newName", "image")


def image_name(reference: str) -> str | None:
    """``host/repository`` of a reference, normalized; None if it is not one."""
    try:
        return parse_image(reference).name
    except InvalidImageReference:
        return None


def split_reference(reference: str) -> tuple[str, str, str]:
    """(repository as written, tag, digest) of a reference, ``""`` for missing parts.
    A ``:`` before the last ``/`` belongs to the registry's port."""
    rest, _, digest = reference.partition("@")
    slash = rest.rfind("/")
    colon = rest.find(":", slash + 1)
    if colon == -1:
        return rest, "", digest
    return rest[:colon], rest[colon + 1 :], digest


@dataclass
class _File:
    """One edit's inputs and what it has found so far."""

    path: str
    text: str
    target: Target
    new: NewImage
    target_name: str
    new_name: str
    splices: list[Splice] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    flux: dict[int, str] = field(default_factory=dict)  # line -> description
    claimed: set[int] = field(default_factory=set)  # ids of scalars a marker owns
    edited: set[int] = field(default_factory=set)  # ids of scalars set (an alias: once)
    declares: bool = False  # a place was found (changed or already pinned)

    def set(self, node: ScalarNode, value: str, what: str) -> None:
        self.declares = True
        if node.value == value or id(node) in self.edited:
            return
        self.edited.add(id(node))
        self.splices.append(yamltext.replace_scalar(self.text, node, value, where=what))
        self.changes.append(f"{what}: {short(node.value) or '(empty)'} → {short(value)}")

    def add(self, mapping: MappingNode, pairs: list[tuple[str, str]], what: str) -> None:
        if not pairs:
            return
        self.splices.append(yamltext.insert_keys(self.text, mapping, pairs, where=what))
        self.changes.extend(f"{what}: added {k}: {short(v)}" for k, v in pairs)

    def flux_line(self, node: Node) -> None:
        number, line = yamltext.line_of(self.text, node)
        self.flux[number] = f"line {number}: {line.strip()}"

    def reference_for(self, current: str) -> str:
        """The new reference, keeping the repository as ``current`` spells it when it
        is the same image (so an edit changes only tag and digest)."""
        written, _, _ = split_reference(current)
        repository = written if image_name(written) == self.new_name else self.new.repository
        tag = f":{self.new.tag}" if self.new.tag else ""
        return f"{repository}{tag}@{self.new.digest}"

    def tag_with_digest(self, current: str, what: str) -> str:
        """``tag@digest`` for a field that holds a tag: the tracked tag, else the tag
        already written there."""
        tag = self.new.tag or current.partition("@")[0]
        if not tag:
            raise WriteBackError(
                f"{self.path}: {what} holds a tag, but the image tracks no tag; pin it with a"
                f" digest field (a ':digest' marker or a 'digest' key) instead")
        return f"{tag}@{self.new.digest}"


def edit(path: str, text: str, target: Target, new: NewImage) -> EditResult:
    """Pin ``target``'s image to ``new`` in the YAML file ``path`` whose content is
    ``text``. Text that is not YAML comes back unchanged with ``skipped`` saying so;
    a value that cannot be pinned raises ``WriteBackError`` (the message names the
    file and the field: a spec problem for a condition)."""
    if not _may_declare(text, target):
        return EditResult(text=text)
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    body = text[len(bom):]
    try:
        docs = yamltext.compose(path, body)
    except WriteBackError as exc:
        # A Helm chart's templates are *.yaml but not YAML; they declare no image
        # literally, so they are passed over (and said so), not an error.
        return EditResult(text=text, skipped=str(exc))
    target_name = image_name(target.repository)
    new_name = image_name(new.repository)
    assert target_name is not None and new_name is not None  # noqa: S101 (validated)
    state = _File(path=path, text=body, target=target, new=new,
                  target_name=target_name, new_name=new_name)
    _markers(state, docs)
    for doc in docs:
        if isinstance(doc, MappingNode):
            _kustomization(state, doc)
            _helm_values(state, doc)
            _containers(state, doc)
    flux_owned = tuple(state.flux[n] for n in sorted(state.flux))
    if not state.splices:
        return EditResult(text=text, flux_owned=flux_owned, declares=state.declares)
    return EditResult(text=bom + yamltext.apply(body, state.splices),
                      changes=tuple(state.changes), flux_owned=flux_owned, declares=True)


def _may_declare(text: str, target: Target) -> bool:
    """False when ``text`` cannot name the image anywhere, so it need not be parsed: every
    place spells the repository's last path component (``nginx`` in ``nginx:1.2``,
    ``docker.io/library/nginx`` or a Bitnami ``repository: bitnami/nginx``) or carries a
    marker; a Helm values block, which may hold only a tag, spells its key."""
    needles = ["$imagepatch", "$imagepolicy", parse_image(target.repository).repository
               .rsplit("/", 1)[-1]]
    if target.helm_values_key is not None:
        needles.append(target.helm_values_key.rsplit(".", 1)[-1])
    return any(needle in text for needle in needles)


# -- 1. setter markers -----------------------------------------------------------------


def _markers(state: _File, docs: list[Node]) -> None:
    found: list[tuple[ScalarNode, MappingNode | None, str]] = []
    for doc in docs:
        for node, parent in yamltext.walk(doc):
            marker = yamltext.marker_of(state.text, node)
            if marker is None:
                continue
            state.claimed.add(id(node))
            if marker.kind == "imagepolicy":
                if image_name(node.value) == state.target_name or (
                    parent is not None and _names_target(state, parent)):
                    state.flux_line(node)
                continue
            policy, _, suffix = marker.value.rpartition(":")
            if suffix not in _MARKER_FIELDS:
                policy, suffix = marker.value, ""
            if policy != state.target.policy:
                continue
            if suffix in ("", "name"):
                if image_name(node.value) != state.target_name:
                    continue
            elif parent is not None and _names_other(state, parent):
                continue
            found.append((node, parent, suffix))
    has_digest_marker = any(suffix == "digest" for _, _, suffix in found)
    for node, _parent, suffix in found:
        number, _ = yamltext.line_of(state.text, node)
        what = f"line {number} ($imagepatch {state.target.policy}{':' + suffix if suffix else ''})"
        if suffix == "":
            state.set(node, state.reference_for(node.value), what)
        elif suffix == "name":
            if state.new_name != state.target_name:
                state.set(node, state.new.repository, what)
        elif suffix == "digest":
            state.set(node, state.new.digest, what)
        elif has_digest_marker:
            if state.new.tag:
                state.set(node, state.new.tag, what)
        else:
            state.set(node, state.tag_with_digest(node.value, what), what)


def _naming_values(state: _File, mapping: MappingNode) -> list[str]:
    """The image names a mapping's naming keys and ``:name`` markers spell."""
    names = []
    registry = yamltext.scalar(mapping, "registry")
    for key in _NAMING_KEYS:
        node = yamltext.scalar(mapping, key)
        if node is None or not node.value:
            continue
        if key == "repository" and registry is not None and registry.value:
            names.append(f"{registry.value}/{node.value}")
        else:
            names.append(node.value)
    for _key, value in mapping.value:
        if isinstance(value, ScalarNode):
            marker = yamltext.marker_of(state.text, value)
            if marker is not None and marker.value.endswith(":name"):
                names.append(value.value)
    return names


def _names_target(state: _File, mapping: MappingNode) -> bool:
    return any(image_name(n) == state.target_name for n in _naming_values(state, mapping))


def _names_other(state: _File, mapping: MappingNode) -> bool:
    names = _naming_values(state, mapping)
    return bool(names) and not any(image_name(n) == state.target_name for n in names)


def _flux_owned(state: _File, nodes: list[Node]) -> bool:
    """True (and each reported) when any of ``nodes`` carries Flux's marker."""
    owned = False
    for node in nodes:
        if isinstance(node, ScalarNode):
            marker = yamltext.marker_of(state.text, node)
            if marker is not None and marker.kind == "imagepolicy":
                state.flux_line(node)
                owned = True
    return owned


def _free(state: _File, node: ScalarNode | None) -> bool:
    """A scalar a place may edit: not claimed by any marker."""
    return node is not None and id(node) not in state.claimed


# -- 2. kustomization images -----------------------------------------------------------


def _kustomization(state: _File, doc: MappingNode) -> None:
    kind = yamltext.scalar(doc, "kind")
    api = yamltext.scalar(doc, "apiVersion")
    api_version = api.value if api is not None else ""
    images: Node | None = None
    if kind is not None and kind.value == "Kustomization":
        if api_version.startswith("kustomize.toolkit.fluxcd.io/"):
            images = yamltext.child(doc, "spec", "images")
        elif api_version.startswith("kustomize.config.k8s.io/"):
            images = yamltext.child(doc, "images")
    elif posixpath.basename(state.path) in KUSTOMIZATION_FILES and kind is None:
        images = yamltext.child(doc, "images")
    if not isinstance(images, SequenceNode):
        return
    for index, entry in enumerate(images.value):
        if isinstance(entry, MappingNode):
            _kustomize_entry(state, index, entry)


def _kustomize_entry(state: _File, index: int, entry: MappingNode) -> None:
    name = yamltext.scalar(entry, "name")
    new_name = yamltext.scalar(entry, "newName")
    effective = new_name.value if new_name is not None and new_name.value else (
        name.value if name is not None else "")
    if image_name(effective) != state.target_name:
        return
    if _flux_owned(state, [value for _key, value in entry.value]):
        return
    what = f"images[{index}] (kustomization)"
    missing: list[tuple[str, str]] = []
    if state.new_name != state.target_name:
        if new_name is None:
            missing.append(("newName", state.new.repository))
        elif _free(state, new_name):
            state.set(new_name, state.new.repository, f"{what}: newName")
    if state.new.tag:
        new_tag = yamltext.scalar(entry, "newTag")
        if new_tag is None:
            missing.append(("newTag", state.new.tag))
        elif _free(state, new_tag):
            state.set(new_tag, state.new.tag, f"{what}: newTag")
    digest = yamltext.scalar(entry, "digest")
    if digest is None:
        missing.append(("digest", state.new.digest))
    elif _free(state, digest):
        state.set(digest, state.new.digest, f"{what}: digest")
    state.add(entry, missing, what)


# -- 3. Helm values --------------------------------------------------------------------


def _helm_values(state: _File, doc: MappingNode) -> None:
    key = state.target.helm_values_key
    if key is None:
        return
    kind = yamltext.scalar(doc, "kind")
    api = yamltext.scalar(doc, "apiVersion")
    root: Node | None = doc
    if (kind is not None and kind.value == "HelmRelease" and api is not None
            and api.value.startswith("helm.toolkit.fluxcd.io/")):
        root = yamltext.child(doc, "spec", "values")
    node = yamltext.child(root, *key.split("."))
    what = f"values {key}"
    if isinstance(node, ScalarNode):
        # A marked value (Flux's or a policy's) is its marker's; the marker pass did it.
        if image_name(node.value) == state.target_name and _free(state, node):
            state.set(node, state.reference_for(node.value), what)
    elif isinstance(node, MappingNode):
        _helm_mapping(state, node, what)


def _helm_mapping(state: _File, mapping: MappingNode, what: str) -> None:
    registry = yamltext.scalar(mapping, "registry")
    repository = yamltext.scalar(mapping, "repository")
    if repository is not None:
        written = repository.value
        if registry is not None and registry.value:
            written = f"{registry.value}/{written}"
        if image_name(written) != state.target_name:
            return
    if _flux_owned(state, [value for _key, value in mapping.value]):
        return
    if repository is not None and state.new_name != state.target_name and _free(
            state, repository):
        if registry is not None and registry.value and _free(state, registry):
            moved = parse_image(state.new.repository)
            state.set(registry, moved.host, f"{what}.registry")
            state.set(repository, moved.repository, f"{what}.repository")
        else:
            state.set(repository, state.new.repository, f"{what}.repository")
    tag = yamltext.scalar(mapping, "tag")
    digest = yamltext.scalar(mapping, "digest")
    if digest is not None:
        if _free(state, digest):
            state.set(digest, state.new.digest, f"{what}.digest")
        if tag is not None and _free(state, tag):
            plain = state.new.tag or tag.value.partition("@")[0]
            state.set(tag, plain, f"{what}.tag")
    elif tag is not None:
        if _free(state, tag):
            state.set(tag, state.tag_with_digest(tag.value, f"{what}.tag"), f"{what}.tag")
    else:
        state.add(mapping, [("tag", state.tag_with_digest("", f"{what}.tag"))], what)


# -- 4. pod templates ------------------------------------------------------------------


def _containers(state: _File, doc: MappingNode) -> None:
    kind_node = yamltext.scalar(doc, "kind")
    kind = kind_node.value if kind_node is not None else ""
    if kind in _TEMPLATE_KINDS:
        pod = yamltext.child(doc, "spec", "template", "spec")
    elif kind == "CronJob":
        pod = yamltext.child(doc, "spec", "jobTemplate", "spec", "template", "spec")
    elif kind == "Pod":
        pod = yamltext.child(doc, "spec")
    else:
        return
    name_node = yamltext.scalar(doc, "metadata", "name")
    workload = f"{kind}/{name_node.value if name_node is not None else ''}"
    for field_name in ("initContainers", "containers"):
        containers = yamltext.child(pod, field_name)
        if not isinstance(containers, SequenceNode):
            continue
        for container in containers.value:
            image = yamltext.scalar(container, "image")
            if image is None or image_name(image.value) != state.target_name:
                continue
            if not _free(state, image):  # marked: the marker pass did it
                continue
            cname = yamltext.scalar(container, "name")
            label = "init container" if field_name == "initContainers" else "container"
            what = f"{workload} {label} {cname.value if cname is not None else '?'}"
            state.set(image, state.reference_for(image.value), what)
