"""Git write-back, the pure part: what to write into which file, and the commit's message.

For a workload a GitOps tool delivers, imagepatch pins the new image in the
Git repository the tool reads instead of in the cluster. This package
decides the text: ``edit`` pins an image in one YAML file (kustomization
``images:``, Helm values, plain manifests, setter markers; Flux's own markers
left alone), ``edit_argocd_source`` writes Argo CD's parameter-override
file, and ``commit_message``/``revert_message`` word the commits, whose
trailers (``patch_trailer``/``revert_trailer``) let the Git adapter find a
commit again after a restart. The Git adapter (``adapters/git.py``) reads
and writes the files and runs git; the forge adapter (``adapters/forge.py``)
opens pull requests. No I/O here.
"""

from imagepatch.core.writeback.argocd import (
    argocd_on_flux,
    argocd_source_path,
    edit_argocd_source,
)
from imagepatch.core.writeback.edit import KUSTOMIZATION_FILES, edit, image_name
from imagepatch.core.writeback.messages import (
    DEFAULT_TEMPLATE,
    PATCH_TRAILER,
    REVERT_TRAILER,
    TEMPLATE_FIELDS,
    check_template,
    commit_message,
    patch_trailer,
    revert_message,
    revert_trailer,
    trailers,
)
from imagepatch.core.writeback.model import EditResult, NewImage, Target, WriteBackError

__all__ = [
    "DEFAULT_TEMPLATE",
    "KUSTOMIZATION_FILES",
    "PATCH_TRAILER",
    "REVERT_TRAILER",
    "TEMPLATE_FIELDS",
    "EditResult",
    "NewImage",
    "Target",
    "WriteBackError",
    "argocd_on_flux",
    "argocd_source_path",
    "check_template",
    "commit_message",
    "edit",
    "edit_argocd_source",
    "image_name",
    "patch_trailer",
    "revert_message",
    "revert_trailer",
    "trailers",
]
