"""Many clients loading, using, unloading and expiring models at once over HTTP on a real server (TTLs of 0 and
1 s): every request answered as allowed, /api/ps never lists a model twice, everything unloaded at the end,
and the log shows each model's loads and unloads alternating. The in-process run of the same:
tests/models/test_manager_stress.py.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import LAMP_TEXT, running_server, word_error_rate
from tests.models.stress_models import DEADLOCK_BOUND_SECONDS, LAMP, STT_IDS, TTS_IDS, fill_models_dir

pytestmark = pytest.mark.server

HTTP_MIN_SECONDS = 10.0
HTTP_MAX_SECONDS = 45.0
MIN_USES = 5
"""Transcriptions and speeches that must succeed in the run."""
LOG_LINE = re.compile(r"\b(loaded|unloaded) (stt|tts) model (\S+)")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill_models_dir(tmp_path_factory.mktemp("models"))


def test_http_interleavings_end_consistent(models_dir: Path) -> None:
    env = {"STT_MODEL_TTL": "1", "TTS_MODEL_TTL": "0", "MODELS_DIR": str(models_dir), "WHISPER__CPU_THREADS": "1"}
    with running_server(env) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        rng = random.Random(7)
        started = time.monotonic()
        failures: list[str] = []
        counts = Counter[str]()

        def running() -> bool:
            elapsed = time.monotonic() - started
            # Until every outcome asserted below has been seen (a slow host needs longer than 10 s for that).
            enough = (
                min(counts["transcribe 200"], counts["speak 200"]) >= MIN_USES
                and min(counts["unload 200"], counts["unload 409"]) > 0
            )
            return elapsed < HTTP_MAX_SECONDS and (elapsed < HTTP_MIN_SECONDS or not enough)

        def expect(response: httpx.Response, allowed: set[int], what: str) -> None:
            counts[f"{what} {response.status_code}"] += 1
            if response.status_code not in allowed:
                failures.append(f"{what}: {response.status_code} {response.text[:300]}")

        def transcribe() -> None:
            model = rng.choice(STT_IDS)
            with LAMP.open("rb") as audio:
                response = http.post("/v1/audio/transcriptions", files={"file": audio}, data={"model": model})
            expect(response, {200}, "transcribe")
            if response.status_code == 200 and word_error_rate(LAMP_TEXT, response.json()["text"]) > 0.2:
                failures.append(f"{model} transcribed {response.json()['text']!r}")

        def speak() -> None:
            body = {"model": "tts-1", "voice": rng.choice(TTS_IDS), "input": "Hello.", "response_format": "pcm"}
            response = http.post("/v1/audio/speech", json=body)
            expect(response, {200}, "speak")
            if response.status_code == 200 and len(response.content) < 2000:
                failures.append(f"speech too short: {len(response.content)} bytes")

        def load() -> None:
            expect(http.post(f"/api/ps/{rng.choice(STT_IDS + TTS_IDS)}"), {201, 409}, "load")

        def unload() -> None:
            # Mostly a model that is loaded now (idle or in use), so that unloads do succeed or meet users.
            loaded = [model["id"] for model in http.get("/api/ps").json()["models"]]
            target = rng.choice(loaded) if loaded and rng.random() < 0.8 else rng.choice(STT_IDS + TTS_IDS)
            expect(http.delete(f"/api/ps/{target}"), {200, 404, 409}, "unload")

        def listing() -> None:
            response = http.get("/api/ps")
            expect(response, {200}, "ps")
            ids = [(model["kind"], model["id"]) for model in response.json()["models"]]
            if len(ids) != len(set(ids)):
                failures.append(f"/api/ps lists a model twice: {ids}")

        operations = [transcribe, transcribe, speak, speak, load, unload, unload, listing]

        def worker() -> None:
            while running():
                rng.choice(operations)()
                time.sleep(rng.uniform(0, 0.3))  # idle gaps: models fall idle, TTLs and unloads race with use

        with ThreadPoolExecutor(6) as pool:
            for future in [pool.submit(worker) for _ in range(6)]:
                future.result(timeout=DEADLOCK_BOUND_SECONDS)

        print(f"HTTP stress: {dict(counts)}")
        assert failures == [], failures
        # With TTLs of 0 and 1 s everything goes once the requests are done.
        deadline = time.monotonic() + 30
        while (models := http.get("/api/ps").json()["models"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert models == [], models
        assert counts["transcribe 200"] >= MIN_USES, counts
        assert counts["speak 200"] >= MIN_USES, counts
        assert counts["unload 409"] >= 1, counts
        assert counts["unload 200"] >= 1, counts
        assert server.alive()
        logs = server.logs()

    # In the log, every model's loads and unloads alternate: it was never loaded twice at once.
    state: dict[tuple[str, str], str] = {}
    for event, kind, model_id in LOG_LINE.findall(logs):
        previous = state.get((kind, model_id), "unloaded")
        history = [line for line in logs.splitlines() if f" model {model_id}" in line]
        assert event != previous, f"{kind} {model_id} {event} twice in a row:\n" + "\n".join(history)
        state[(kind, model_id)] = event
    assert set(state.values()) == {"unloaded"}, state
