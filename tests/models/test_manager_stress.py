"""Many tasks loading, using, unloading and expiring models at once in one ModelManager, with the real whisper
and piper kinds (tiny.en and the bundled voice, each under two ids, plus a corrupt model) driven by random
interleavings under a time bound: no deadlock, no model loaded twice, no request served by an unloaded
model, and the manager's bookkeeping consistent at every step. The same over HTTP: tests/management/test_stress.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from speaches.config import Settings
from speaches.errors import ConflictError, ModelLoadError, NotFoundError
from speaches.models.catalog import Kind, ModelRef
from speaches.models.manager import LoadedModel, ModelKind, ModelManager
from speaches.speech.piper import piper_voice_kind
from speaches.transcription.whisper import whisper_model_kind
from tests.helpers import LAMP_TEXT, word_error_rate
from tests.models.stress_models import BROKEN_ID, DEADLOCK_BOUND_SECONDS, LAMP, STT_IDS, TTS_IDS, fill_models_dir

# In-process, but it runs for tens of seconds: kept out of the fast run.
pytestmark = pytest.mark.slow

# The in-process run goes on for at least MIN_SECONDS and until every model was loaded (and so
# unloaded) a few times, with MAX_SECONDS as its bound on a slow machine; a deadlock trips the last.
MIN_SECONDS = 10.0
MAX_SECONDS = 60.0
LOADS_PER_MODEL = 4


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
        def load(ref: ModelRef) -> LoadedModel[Any]:
            model_id = ref.id
            with self.lock:
                if self.live[model_id] or self.loading[model_id]:
                    self.violations.append(f"{model_id} loaded while another copy is loading or in memory")
                self.loading[model_id] += 1
            try:
                loaded = kind.load(ref)
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


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill_models_dir(tmp_path_factory.mktemp("models"))


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

    def pick() -> ModelRef:
        kind = rng.choice([Kind.STT, Kind.TTS])
        return ModelRef(kind, rng.choice(STT_IDS if kind == "stt" else TTS_IDS))

    async def use_once() -> None:
        ref = pick()
        kind, model_id = ref.kind, ref.id
        async with manager.use(ref) as lease:
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
        attempt = asyncio.ensure_future(manager.acquire(pick()))
        await asyncio.sleep(rng.uniform(0, 0.3))
        attempt.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            (await attempt).release()
        refused["abandoned"] += 1

    async def load() -> None:
        await manager.load(pick())

    async def unload() -> None:
        try:
            await manager.unload(pick())
        except (NotFoundError, ConflictError) as error:
            refused[type(error).__name__] += 1

    async def broken() -> None:
        with pytest.raises(ModelLoadError, match=re.escape(BROKEN_ID)):
            await manager.acquire(ModelRef(Kind.STT, BROKEN_ID))
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
