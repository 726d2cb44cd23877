"""The official `openai` Node SDK's tests, and what they share: Node with the locked SDK installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent


def node_with_openai_sdk() -> str:
    """The `node` program, with tests/node's locked `openai` package installed (`npm ci` when it is missing, as
    `.ci/run` does). Skips the test when Node.js is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    if not (NODE_DIR / "node_modules" / "openai" / "package.json").is_file():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not: cannot install the openai package"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    return node
