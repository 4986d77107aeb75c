"""The operator process never imports the ``kubernetes`` client package (issue 21: RSS),
nor httpx's command line (``rich``, ``pygments``).

It costs tens of MiB resident (a model class per API type) and the operator
talks to the API server through ``adapters.kubeapi`` alone. kopf imports it
whenever it is installed, so ``imagepatch run`` marks it absent before kopf
loads (``cli.operator_imports``). A fresh interpreter does exactly what
``imagepatch run`` imports, and then the modules the operator loads later
(the leader elector, the login handler's client), and lists what it holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from imagepatch import cli
cli.operator_imports()
import imagepatch.adapters.leader, imagepatch.adapters.kube, imagepatch.adapters.store
import imagepatch.adapters.builders.job, imagepatch.adapters.report_source
import kopf
print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))
"""


def test_the_operator_process_does_not_import_the_kubernetes_client() -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    modules = json.loads(done.stdout)
    assert "kopf" in modules and "imagepatch.handlers" in modules and "httpx" in modules
    for name in ("kubernetes", "rich", "pygments"):
        assert [m for m in modules if m == name or m.startswith(f"{name}.")] == []


def test_kopf_is_given_the_operators_own_login_handler() -> None:
    """kopf's default login would import the kubernetes client: ours is registered."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
    probe = """
from imagepatch import cli
cli.operator_imports()
import kopf
from kopf._core.intents import causes
registry = kopf.get_default_registry()
print([h.id for h in registry._activities.get_all_handlers()
       if h.activity == causes.Activity.AUTHENTICATION])
"""
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "['login']"
