"""Every documented shell command either runs against the local API server or says why not.

The fenced ``sh``/``bash``/``shell`` blocks of README.md, docs/*.md and
charts/imagepatch/README.md, and the indented commands of the chart's
NOTES.txt (rendered by ``helm install --dry-run``), are extracted. A block is
run with bash (``set -euo pipefail``, from a copy of the repository root, with the local
cluster's KUBECONFIG and the built kubectl and helm first on PATH) unless the
line just before its fence is a marker (the convention is documented in
README.md, "Documented commands are tested"):

* ``<!-- docs-test: aws -->``: the block needs an AWS account (IAM, EKS,
  CloudFormation) and is not run here;
* ``<!-- docs-test: skip REASON -->``: the block is illustrative or cannot run
  inside a test session (it starts its own cluster, names a placeholder
  workload); the reason is required.

The test fails when an unmarked block fails, when a marker is unknown or a
skip has no reason. Blocks run in document order, file by file, so a file's
install / inspect / uninstall sequence is exercised as a reader would run it.
Deleting the CRDs (the uninstall sections) deletes every object of their kinds;
the CRDs are applied again at the end so later tests in the session keep them.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.integration.test_packaging import CHART, REPO, Helm
from tests.support.crds import install_crds

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), CHART / "README.md"]
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->\s*$")
SHELLS = {"sh", "bash", "shell", "console"}


@dataclass
class Block:
    where: str
    text: str
    marker: str | None
    reason: str


def extract(path: Path) -> list[Block]:
    """The shell blocks of one Markdown file, with the marker line before each."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        if lang in SHELLS:
            prev = i - 1
            while prev >= 0 and not lines[prev].strip():
                prev -= 1
            mark = MARKER.match(lines[prev]) if prev >= 0 else None
            body = "\n".join(line[len(indent):] if line.startswith(indent) else line
                             for line in lines[i + 1:end])
            blocks.append(Block(f"{path.relative_to(REPO)}:{i + 1}", body,
                                mark.group(1) if mark else None, mark.group(2) if mark else ""))
        i = end + 1
    return blocks


def notes_commands(helm: Helm, kubeconfig: Path) -> list[str]:
    """The commands NOTES.txt tells the user to run, as ``helm install --dry-run`` renders them."""
    out = helm.run("install", "imagepatch", str(CHART), "--dry-run", "--kubeconfig", str(kubeconfig),
                   "--namespace", "imagepatch-system", "--set", "builds.createNamespace=true").stdout
    notes = out.split("NOTES:", 1)[1]
    return [line.strip() for line in notes.splitlines()
            if re.match(r"^\s{3,}(kubectl|helm|imagepatch)\s", line)]


def test_blocks_parse_and_markers_are_known() -> None:
    blocks = [b for path in DOCS for b in extract(path)]
    assert blocks, "no shell blocks found"
    for b in blocks:
        assert b.marker in (None, "aws", "skip"), f"{b.where}: unknown docs-test marker {b.marker!r}"
        if b.marker == "skip":
            assert b.reason, f"{b.where}: a docs-test skip needs a reason"
    print(f"\n{len(blocks)} blocks: {sum(b.marker is None for b in blocks)} run, "
          f"{sum(b.marker == 'aws' for b in blocks)} need AWS, {sum(b.marker == 'skip' for b in blocks)} skipped")


def test_documented_commands_run_against_the_local_api_server(kube, helm: Helm, tmp_path: Path) -> None:
    env = {
        **helm.env,
        "KUBECONFIG": str(kube.kubeconfig),
        "PATH": os.pathsep.join([str(Path(kube.kubectl_bin).parent), str(Path(helm.binary).parent),
                                 str(REPO / ".venv" / "bin"), os.environ.get("PATH", "")]),
        "HOME": str(tmp_path),
    }
    ran: list[str] = []
    # A checkout whose files are the repository's (symlinks), so what a
    # command writes (iam-policy.json) lands in tmp_path, not the worktree.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for entry in REPO.iterdir():
        if entry.name != ".git":
            (checkout / entry.name).symlink_to(entry)

    def run(where: str, script: str) -> None:
        res = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=checkout, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{where} failed:\n{script}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
        ran.append(where)

    try:
        for path in DOCS:
            for b in extract(path):
                if b.marker is None:
                    run(b.where, b.text)
        # NOTES.txt after a Helm install: the operator check, the labels, the
        # CRD upgrade over the Helm-installed CRDs, then the uninstall it states.
        helm.run("install", "imagepatch", str(CHART), "--kubeconfig", str(kube.kubeconfig),
                 "--namespace", "imagepatch-system", "--create-namespace")
        try:
            for cmd in notes_commands(helm, kube.kubeconfig):
                if cmd.startswith("imagepatch "):
                    continue  # the CLI against the cluster: covered by tests/integration/test_report.py
                if cmd.startswith("kubectl delete"):
                    continue  # the chart README's CRDs section runs the same uninstall
                if " logs " in cmd:
                    continue  # kwok simulates the operator's pod: it has no logs
                run("NOTES.txt", cmd)
        finally:
            helm.run("uninstall", "imagepatch", "--kubeconfig", str(kube.kubeconfig),
                     "--namespace", "imagepatch-system", "--wait", check=False)
    finally:
        # The README's walkthrough namespace; the CRDs later tests rely on.
        kube.kubectl("delete", "namespace", "team-a", "--ignore-not-found", "--wait=false", check=False)
        install_crds(kube)
    print(f"\nran {len(ran)} documented blocks/commands: {ran}")
