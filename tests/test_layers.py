"""The domain and the steps run without Dagster: imported here with Dagster made unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dagster", "dagster_aws", "dagster_graphql"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
import embedding_assets.domain, embedding_assets.steps, embedding_assets.wiring, embedding_assets.api
for package in (embedding_assets.domain, embedding_assets.steps):
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
print(sorted(m for m in sys.modules if m.startswith("embedding_assets")))
"""


def test_domain_steps_and_wiring_import_without_dagster():
    out = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "embedding_assets.steps.compact" in out.stdout and "embedding_assets.domain.ports" in out.stdout
