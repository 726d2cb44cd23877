"""Runs tests/node/sdk.test.mjs (the official `openai` Node SDK) against the shared real server.

Skipped only when Node.js is not installed. The SDK comes from tests/node/package-lock.json:
`.ci/run` installs it with `npm ci`; when it is missing here, this test installs it the same way.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.helpers import AUDIO_DIR, Server
from tests.node import NODE_DIR, node_with_openai_sdk


@pytest.fixture(scope="module")
def node() -> str:
    return node_with_openai_sdk()


def test_openai_node_sdk(node: str, server: Server) -> None:
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", "sdk.test.mjs"],
        cwd=NODE_DIR,
        env={**os.environ, "SPEACHES_BASE_URL": f"{server.url}/v1", "SPEACHES_AUDIO_DIR": str(AUDIO_DIR)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"the Node SDK tests failed:\n{report}\n--- server log ---\n{server.logs()[-5000:]}"
    # node:test reports its counts: every test in the file must have run and passed, none skipped away.
    declared = len(re.findall(r"^test\(", (NODE_DIR / "sdk.test.mjs").read_text(), flags=re.MULTILINE))
    assert declared >= 10
    assert f"ℹ pass {declared}\n" in report, report
