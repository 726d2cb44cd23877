"""Runs tests/node/realtime.test.mjs (the official `openai` Node SDK's Realtime WebSocket client) against a real
server that requires an API key, which the SDK presents as the `openai-insecure-api-key.<key>` subprotocol.

Skipped only when Node.js is not installed; the SDK comes from tests/node/package-lock.json (`npm ci`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import AUDIO_DIR, running_server
from tests.node import NODE_DIR, node_with_openai_sdk
from tests.realtime.realtime_client import pcm_at

pytestmark = pytest.mark.server

API_KEY = "node-realtime-key"


def test_openai_node_sdk_realtime(tmp_path: Path) -> None:
    node = node_with_openai_sdk()
    # Node 22 has a WebSocket of its own; Node 20 only behind a flag.
    has_websocket = (
        subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'undefined' ? 1 : 0)"]).returncode == 0
    )
    flags = [] if has_websocket else ["--experimental-websocket"]
    pcm = tmp_path / "lamp.pcm"
    pcm.write_bytes(pcm_at(AUDIO_DIR / "turn_on_the_living_room_lamp.wav"))
    with running_server({"API_KEY": API_KEY}) as server:
        result = subprocess.run(
            [node, *flags, "--test", "--test-reporter=spec", "realtime.test.mjs"],
            cwd=NODE_DIR,
            env={
                **os.environ,
                "SPEACHES_BASE_URL": f"{server.url}/v1",
                "SPEACHES_API_KEY": API_KEY,
                "SPEACHES_PCM": str(pcm),
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
        report = result.stdout + result.stderr
        assert result.returncode == 0, f"the Node SDK realtime test failed:\n{report}\n{server.logs()[-3000:]}"
        assert "ℹ pass 1\n" in report, report
