"""Property-based fuzzing of every HTTP operation against the server's own OpenAPI schema (schemathesis).

Schemathesis reads /openapi.json from a real server and sends it generated requests, valid and invalid,
in all its phases (schema examples, boundary coverage, random fuzzing, stateful sequences such as
load-then-unload). Every check but one runs: no 5xx, every response's status, content type, headers
and body as documented, schema-invalid requests refused, `Allow` on 405 correct. Not run: "every
schema-valid request is accepted", which no API with semantic 400s (text with nothing to speak) meets.

The run is bounded (examples per operation, fixed seed) to stay around a minute on 2 cores. Generated
model ids and audio are almost never real, so requests take the cheap paths; the few that reach a
model use the small bundled ones. The server has its own empty Hugging Face cache, so no fuzzed
DELETE can remove a model that other tests use. (Schemathesis' lazy pytest fixture integration does
not run under pytest 9, hence its CLI, which is also how an operator would run it.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chat.llm_stand_in import StandInLlm
from tests.helpers import TINY_EN, running_server

pytestmark = pytest.mark.server

MAX_EXAMPLES = 25
SEED = 20240611


def test_every_operation_conforms_to_its_schema(tmp_path: Path) -> None:
    env = {
        "HF_HOME": str(tmp_path / "hf-home"),
        "WHISPER__MODEL": TINY_EN,  # `whisper-1` and requests without a model use the smallest model
        "STT_MODEL_TTL": "-1",
        "TTS_MODEL_TTL": "-1",
        "TTS_MAX_INPUT_CHARS": "300",  # a fuzzed `input` that happens to be speakable stays short
    }
    # Chat completions think with the stand-in LLM, so fuzzed conversations go all the way through.
    with StandInLlm() as llm, running_server({**env, "CHAT_COMPLETION_BASE_URL": llm.base_url}) as server:
        started = time.monotonic()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{server.url}/openapi.json",
                "--checks=all",
                # A schema-valid request may still be refused with 400 for what a schema cannot say
                # ("input" holding only punctuation, an id naming no model kind): OpenAI does the same.
                "--exclude-checks=positive_data_acceptance",
                f"--max-examples={MAX_EXAMPLES}",
                f"--seed={SEED}",
                "--workers=1",  # hypothesis parses lambdas with ast, which is not thread-safe on 3.11
                "--request-timeout=120",
                "--suppress-health-check=all",
                "--generation-database=none",
                "--no-color",
                "--report=junit",
                f"--report-junit-path={tmp_path / 'schemathesis.xml'}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        took = time.monotonic() - started
        assert server.alive(), f"the server died while being fuzzed:\n{server.logs()}"
    print(f"schemathesis took {took:.0f} s")
    if run.returncode != 0:
        report = f"{run.stdout[-30000:]}\n{run.stderr[-3000:]}"
        pytest.fail(f"schemathesis found problems (exit {run.returncode}):\n{report}")
