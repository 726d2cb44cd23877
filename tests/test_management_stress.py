"""Many tasks loading, using, unloading and expiring models at once: no deadlock, no model loaded twice,
no request served by an unloaded model, and the manager's bookkeeping consistent at every step.

Two levels: the ModelManager in-process with the real whisper and piper kinds (tiny.en and the bundled
voice, each under two ids, plus a corrupt model) driven by random interleavings under a time bound,
and a shorter run against a real server over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from speaches.config import Settings
from speaches.errors import ConflictError, ModelLoadError, NotFoundError
from speaches.models.manager import LoadedModel, ModelKind, ModelManager
from speaches.speech.piper import piper_voice_kind
from speaches.transcription.whisper import whisper_model_kind
from tests.fake_hub import bundled_joe_voice, bundled_tiny_en_folder
from tests.helpers import AUDIO_DIR, LAMP_TEXT, TINY_EN, running_server, word_error_rate

LAMP = AUDIO_DIR / "turn_on_the_living_room_lamp.wav"
# The in-process run goes on for at least MIN_SECONDS and until every model was loaded (and so
# unloaded) a few times, with MAX_SECONDS as its bound on a slow machine; a deadlock trips the last.
MIN_SECONDS = 10.0
MAX_SECONDS = 60.0
LOADS_PER_MODEL = 4
DEADLOCK_BOUND_SECONDS = 120.0


@dataclass
class Tracker:
    """Instruments a real model kind: which models are alive, so the test can check every use."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    live: Counter[str] = field(default_factory=Counter)
    """Model id -> instances loaded and not yet unloaded (must never exceed 1)."""
    loading: Counter[str] = field(default_factory=Counter)
    loads: Counter[str] = field(default_factory=Counter)
    owner: dict[int, str] = field(default_factory=dict)
    """id() of each live model object -> its model id."""
    violations: list[str] = field(default_factory=list)

    def wrap(self, kind: ModelKind[Any]) -> ModelKind[Any]:
        def load(model_id: str) -> LoadedModel[Any]:
            with self.lock:
                if self.live[model_id] or self.loading[model_id]:
                    self.violations.append(f"{model_id} loaded while another copy is loading or in memory")
                self.loading[model_id] += 1
            try:
                loaded = kind.load(model_id)
            finally:
                with self.lock:
                    self.loading[model_id] -= 1
            with self.lock:
                self.live[model_id] += 1
                self.loads[model_id] += 1
                self.owner[id(loaded.model)] = model_id
            return loaded

        def unload(model: Any) -> None:
            # Unloading a large model (or one on a GPU) takes a while: widen the window for races.
            time.sleep(random.uniform(0, 0.1))
            with self.lock:
                model_id = self.owner.pop(id(model), None)
                if model_id is None:
                    self.violations.append("unload of a model that is not live")
                else:
                    self.live[model_id] -= 1
            if kind.unload is not None:
                kind.unload(model)

        return ModelKind(name=kind.name, load=load, ttl=_random_ttl, unload=unload)

    def check_live(self, model: Any, model_id: str, when: str) -> None:
        with self.lock:
            if self.owner.get(id(model)) != model_id:
                self.violations.append(f"{when}: a request used {model_id} while it was not loaded")


def _random_ttl() -> int:
    # Read on every release: 0 (unload at once), a few tens of ms, or never (explicit unloads only).
    return random.choice([0, 0, 0.02, 0.05, 0.2, -1])  # type: ignore[return-value]


def _link_or_copy(source: Path, target: Path) -> None:
    # Not a symlink: MODELS_DIR refuses links that lead outside it.
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two ids per real model (hard-linked files) and one whisper model whose model.bin is garbage."""
    folder = tmp_path_factory.mktemp("models")
    (folder / "copies" / "tiny-en").mkdir(parents=True)
    for file in bundled_tiny_en_folder().iterdir():
        _link_or_copy(file, folder / "copies" / "tiny-en" / file.name)
    voice = bundled_joe_voice()
    for name in ("en_US-second-medium", "en_US-third-medium"):
        _link_or_copy(voice, folder / f"{name}.onnx")
        _link_or_copy(voice.with_name(voice.name + ".json"), folder / f"{name}.onnx.json")
    broken = folder / "broken" / "whisper"
    broken.mkdir(parents=True)
    shutil.copy(bundled_tiny_en_folder() / "config.json", broken / "config.json")
    (broken / "model.bin").write_bytes(b"this is not a CTranslate2 model" * 100)
    return folder


STT_IDS = [TINY_EN, "copies/tiny-en"]
TTS_IDS = ["en_US-second-medium", "en_US-third-medium"]
BROKEN_ID = "broken/whisper"


def _infer(kind: str, model: Any) -> str:
    """A real (short) inference: runs on the model's weights, so an unloaded whisper model would raise."""
    if kind == "stt":
        segments, _ = model.transcribe(str(LAMP), beam_size=1, language="en")
        return " ".join(segment.text for segment in segments)
    return str(sum(len(chunk.audio_int16_bytes) for chunk in model.synthesize("Hi.")))


async def test_random_interleavings_keep_the_manager_consistent(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # every model here is local
    settings = Settings(models_dir=models_dir, whisper={"cpu_threads": 1}, _env_file=None)  # type: ignore[call-arg]
    tracker = Tracker()
    manager = ModelManager()
    manager.register(tracker.wrap(whisper_model_kind(settings)))
    manager.register(tracker.wrap(piper_voice_kind(settings)))
    rng = random.Random(20240611)
    served = Counter[str]()
    refused = Counter[str]()
    started = time.monotonic()

    def running() -> bool:
        elapsed = time.monotonic() - started
        with tracker.lock:
            enough = all(tracker.loads[model_id] >= LOADS_PER_MODEL for model_id in STT_IDS + TTS_IDS)
        return elapsed < MAX_SECONDS and (elapsed < MIN_SECONDS or not enough)

    def pick() -> tuple[str, str]:
        kind = rng.choice(["stt", "tts"])
        return kind, rng.choice(STT_IDS if kind == "stt" else TTS_IDS)

    async def use_once() -> None:
        kind, model_id = pick()
        async with manager.use(kind, model_id) as lease:
            tracker.check_live(lease.model, model_id, "before inference")
            # A whisper inference costs ~1 s on a busy 2-core machine; most uses only hold the lease
            # briefly, so that models fall idle and TTL unloads race with new requests.
            if kind == "tts" or rng.random() < 0.25:
                result = await asyncio.to_thread(_infer, kind, lease.model)
                if kind == "stt" and word_error_rate(LAMP_TEXT, result) > 0.2:
                    tracker.violations.append(f"{model_id} transcribed {result!r}")
            else:
                await asyncio.sleep(rng.uniform(0, 0.05))
            tracker.check_live(lease.model, model_id, "after inference")
        lease.release()  # releasing twice is harmless
        served[kind] += 1

    async def abandon() -> None:
        # A client that disconnects while its model is still loading (or just after).
        kind, model_id = pick()
        attempt = asyncio.ensure_future(manager.acquire(kind, model_id))
        await asyncio.sleep(rng.uniform(0, 0.3))
        attempt.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            (await attempt).release()
        refused["abandoned"] += 1

    async def load() -> None:
        await manager.load(*pick())

    async def unload() -> None:
        try:
            await manager.unload(*pick())
        except (NotFoundError, ConflictError) as error:
            refused[type(error).__name__] += 1

    async def broken() -> None:
        with pytest.raises(ModelLoadError, match=re.escape(BROKEN_ID)):
            await manager.acquire("stt", BROKEN_ID)
        refused["broken"] += 1

    operations = [use_once] * 6 + [abandon, load, unload, unload, broken]

    async def worker() -> None:
        while running():
            await rng.choice(operations)()
            # Idle gaps let TTLs expire between uses, so unloads race with new requests.
            await asyncio.sleep(rng.uniform(0, 0.3))

    async def monitor() -> None:
        while running():
            keys = [(status.kind, status.model_id) for status in manager.status()]
            if len(keys) != len(set(keys)):
                tracker.violations.append(f"listed twice: {keys}")
            for status in manager.status():
                if status.ref_count < 0:
                    tracker.violations.append(f"negative ref count: {status}")
                if status.model_id == BROKEN_ID and status.state != "loading":
                    tracker.violations.append(f"a failed load stayed listed: {status}")
                with tracker.lock:
                    live = tracker.live[status.model_id]
                if status.state == "loaded" and live != 1:
                    tracker.violations.append(f"{status.model_id} listed loaded with {live} live instances")
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(asyncio.gather(monitor(), *(worker() for _ in range(8))), DEADLOCK_BOUND_SECONDS)
        # Every lease is back: nothing is in use, nothing is half-loaded.
        for status in manager.status():
            assert status.ref_count == 0, status
            assert status.state in ("loaded", "unloading"), status
    finally:
        await asyncio.wait_for(manager.close(), 60)

    print(f"served {dict(served)}, refused {dict(refused)}, loads {dict(tracker.loads)}")
    assert tracker.violations == []
    assert sum(tracker.live.values()) == 0, f"models still in memory after close: {tracker.live}"
    assert manager.status() == []
    # The run exercised what it claims to: real uses of both kinds, reloads, refusals.
    assert all(tracker.loads[model_id] >= LOADS_PER_MODEL for model_id in STT_IDS + TTS_IDS), tracker.loads
    assert served["stt"] >= 5, served
    assert served["tts"] >= 5, served
    assert refused["ConflictError"] + refused["NotFoundError"] >= 3, refused
    assert refused["broken"] >= 1, refused


# --- the same over HTTP --------------------------------------------------------------------------------

HTTP_MIN_SECONDS = 10.0
HTTP_MAX_SECONDS = 45.0
LOG_LINE = re.compile(r"\b(loaded|unloaded) (stt|tts) model (\S+)")


def test_http_interleavings_end_consistent(models_dir: Path) -> None:
    env = {"STT_MODEL_TTL": "1", "TTS_MODEL_TTL": "0", "MODELS_DIR": str(models_dir), "WHISPER__CPU_THREADS": "1"}
    with running_server(env) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        rng = random.Random(7)
        started = time.monotonic()
        failures: list[str] = []
        counts = Counter[str]()

        def running() -> bool:
            elapsed = time.monotonic() - started
            enough = min(counts["transcribe 200"], counts["speak 200"], counts["unload 200"], counts["unload 409"]) > 0
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
        assert counts["transcribe 200"] >= 5, counts
        assert counts["speak 200"] >= 5, counts
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
