"""Voice conversation latency: the end of a person's speech to the first audio of the answer.

The LLM is the stand-in from the tests (tests/chat/llm_stand_in.py), which answers at once, so what is
measured is this server: hearing (decode + tiny.en), the LLM round trip, and speaking the first sentence.

`chat`: the person's recording (the lamp clip, 3 s) is sent the moment they stop speaking, as one
streamed `POST /v1/chat/completions` with an `input_audio` part and a spoken pcm16 answer, through the
official openai SDK. Measured: to the first chunk (the LLM's first delta is relayed: hearing and the LLM
are done), and to the first `delta.audio` with data (the first sentence is spoken). Each round pads the
clip with a different few milliseconds of silence, so the server's memory of audio it heard never
answers for it.

Beside each round, in the same process and in turns so that load hits both alike, the raw libraries do
the same work: faster-whisper transcribes the clip, piper speaks the answer's first sentence (to its
first chunk). And the server's own parts alone: `/v1/audio/transcriptions` of the clip, and
`/v1/audio/speech` of the first sentence (to its first byte). The ratio server/raw is printed; the
target is an absolute one: first audio <= 1.5 s.

`realtime`: a Realtime conversation session (`client.realtime.connect(model=...)`, server VAD with its
default 500 ms of silence) hears the clip appended at real-time pace in 100 ms pieces, as from a
microphone, one turn per round on one connection. Measured from the moment the append holding the end of
the speech was sent (the clip's last loud 20 ms, found from its samples) to the arrival of
`speech_stopped` (the VAD's wait), of the turn's transcript, of `response.created` and of the first
`response.output_audio.delta`. Target: first audio <= 1.5 s after the end of speech.

Run from the repository root: ``uv run python -m bench.voice [--rounds 7] [--only chat|realtime]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
from openai import OpenAI
from tests.chat.llm_stand_in import StandInLlm, answer_for
from tests.helpers import AUDIO_DIR, TINY_EN, Server
from tests.realtime.realtime_client import Events, append_paced, collect, pcm_at, sdk, silence

from speaches.audio.decoding import decode_audio
from speaches.chat.sentences import SentenceSplitter
from speaches.config import Settings
from speaches.models.catalog import Kind, ModelRef
from speaches.speech.piper import load_piper_voice
from speaches.transcription.whisper import load_whisper_model

VOICE = "en_US-joe-medium"
CLIP = AUDIO_DIR / "turn_on_the_living_room_lamp.wav"
TARGET_SECONDS = 1.5


def wav_bytes(samples: np.ndarray, sample_rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


@dataclass
class Series:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.values.setdefault(name, []).append(seconds)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def chat_round(client: OpenAI, recording: bytes, pid: int | None = None) -> tuple[float, float, float]:
    """(to the first chunk, to the first audio data, server CPU seconds meanwhile) of one streamed spoken
    answer to `recording`."""
    cpu_before = cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    first_chunk = first_audio = None
    stream = client.chat.completions.create(
        model="stand-in",
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "pcm16"},
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_audio",
                        "input_audio": {"data": base64.b64encode(recording).decode(), "format": "wav"},
                    }
                ],
            }
        ],
        stream=True,
    )
    for chunk in stream:
        now = time.perf_counter() - started
        first_chunk = first_chunk if first_chunk is not None else now
        if chunk.choices and chunk.choices[0].delta.audio and chunk.choices[0].delta.audio.data:
            first_audio = now
            break
    cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    stream.close()
    assert first_chunk is not None
    assert first_audio is not None
    return first_chunk, first_audio, cpu


def speech_first_byte(http: httpx.Client, url: str, text: str) -> float:
    body = {"model": "tts-1", "voice": VOICE, "input": text, "response_format": "pcm"}
    started = time.perf_counter()
    with http.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if chunk:
                return time.perf_counter() - started
    raise AssertionError("no audio")


def bench_chat(rounds: int) -> Series:
    samples = decode_audio(CLIP)
    heard_text = "Turn on the living room lamp."
    # What the server speaks first: the answer's first piece, cut as the server cuts it.
    first_sentence = SentenceSplitter(quick_start=True).feed(answer_for([{"role": "user", "content": heard_text}]))[0]
    whisper = load_whisper_model(ModelRef(Kind.STT, TINY_EN), Settings()).model
    piper = load_piper_voice(ModelRef(Kind.TTS, VOICE), Settings()).model

    def raw_hearing() -> None:
        segments, _info = whisper.transcribe(decode_audio(io.BytesIO(wav_bytes(samples))), language="en")
        assert "lamp" in " ".join(segment.text for segment in segments).lower()

    def raw_first_audio() -> None:
        next(iter(piper.synthesize(first_sentence)))

    series = Series()
    env = {"CHAT_COMPLETION_TRANSCRIPTION_MODEL": TINY_EN, "STT_MODEL_TTL": "-1", "TTS_MODEL_TTL": "-1"}
    with StandInLlm() as llm, Server({**env, "CHAT_COMPLETION_BASE_URL": llm.base_url}) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
        with httpx.Client(timeout=120) as http:
            # Warm-up: loads both models in the server, and runs each library once here.
            chat_round(client, wav_bytes(samples))
            raw_hearing()
            raw_first_audio()
            for number in range(rounds):
                padded = wav_bytes(np.concatenate([samples, np.zeros(16 * (number + 1), dtype=np.float32)]))
                assert server.process is not None
                first_chunk, first_audio, cpu = chat_round(client, padded, server.process.pid)
                series.add("server: to first chunk (heard + LLM)", first_chunk)
                series.add("server: to first audio", first_audio)
                series.add("server: CPU seconds until first audio", cpu)
                series.add(
                    "server: /v1/audio/transcriptions",
                    timed(lambda: client.audio.transcriptions.create(model=TINY_EN, file=("clip.wav", padded))),  # noqa: B023
                )
                series.add("server: /v1/audio/speech first byte", speech_first_byte(http, server.url, first_sentence))
                series.add("raw: faster-whisper transcribe", timed(raw_hearing))
                series.add("raw: piper first sentence", timed(raw_first_audio))
    return series


def speech_end_seconds(samples: np.ndarray, sample_rate: int = 16_000) -> float:
    """Where the speech of a clip ends: the end of its last 20 ms frame within 20 dB of the loudest (the
    lamp clip's noise floor is at -30 to -40 dB)."""
    frame = sample_rate // 50
    frames = len(samples) // frame
    rms = np.sqrt(np.mean(samples[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = np.nonzero(rms > rms.max() * 10 ** (-20 / 20))[0]
    return float((loud[-1] + 1) * frame / sample_rate)


async def realtime_rounds(url: str, pid: int, rounds: int, series: Series) -> None:
    lead = 0.3
    clip = pcm_at(CLIP)
    speech_end = lead + speech_end_seconds(decode_audio(CLIP))
    async with sdk(url).realtime.connect(model="stand-in") as connection:
        await connection.session.update(session={"type": "realtime", "audio": {"output": {"voice": "alloy"}}})
        events = Events()
        await collect(connection, events, lambda e: bool(e.of("session.updated")))
        for number in range(rounds + 1):  # the first round warms up
            events = Events()
            audio = silence(lead) + clip + silence(1.5)
            # Up to the 100 ms piece holding the end of the speech, then the rest, both at real-time pace.
            cut = (int(speech_end / 0.1) + 1) * 4800
            cpu_at: list[float] = []

            async def speak(audio: bytes = audio, cut: int = cut, cpu_at: list[float] = cpu_at) -> float:
                await append_paced(connection, audio[:cut], speed=1.0)
                ended = time.monotonic()
                cpu_at.append(cpu_seconds(pid))
                await append_paced(connection, audio[cut:], speed=1.0)
                return ended

            def sample_cpu(e: Events, cpu_at: list[float] = cpu_at) -> bool:
                if e.items and e.items[-1].type == "response.output_audio.delta" and len(cpu_at) == 1:
                    cpu_at.append(cpu_seconds(pid))
                return bool(e.of("response.done")) or bool(e.of("error"))

            sender = asyncio.create_task(speak())
            await collect(connection, events, sample_cpu, limit=120)
            ended = await sender
            assert not events.of("error"), events.of("error")

            def after(kind: str, events: Events = events, ended: float = ended) -> float:
                return events.times[events.index(kind)] - ended

            if number:
                series.add("realtime: speech_stopped (VAD silence)", after("input_audio_buffer.speech_stopped"))
                series.add(
                    "realtime: transcript complete",
                    after("conversation.item.input_audio_transcription.completed"),
                )
                series.add("realtime: response.created", after("response.created"))
                series.add("realtime: first audio", after("response.output_audio.delta"))
                if len(cpu_at) == 2:
                    series.add("realtime: server CPU seconds, speech end to audio", cpu_at[1] - cpu_at[0])
            await connection.input_audio_buffer.clear()


def bench_realtime(rounds: int) -> Series:
    series = Series()
    env = {"CHAT_COMPLETION_TRANSCRIPTION_MODEL": TINY_EN, "STT_MODEL_TTL": "-1", "TTS_MODEL_TTL": "-1"}
    with StandInLlm() as llm, Server({**env, "CHAT_COMPLETION_BASE_URL": llm.base_url}) as server:
        assert server.process is not None
        asyncio.run(realtime_rounds(server.url, server.process.pid, rounds, series))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="measurements of each kind (default 7)")
    parser.add_argument("--only", choices=["chat", "realtime"], help="run one of the two")
    args = parser.parse_args()

    ok = True
    print(f"clip: {CLIP.name} (3.0 s); stt {TINY_EN}, voice {VOICE}; {args.rounds} rounds, medians")
    if args.only in (None, "chat"):
        load_before = os.getloadavg()
        series = bench_chat(args.rounds)
        load_after = os.getloadavg()
        print(f"CPUs: {os.cpu_count()}; load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
        for name in series.values:
            print(f"  {name:42}{series.median(name):>8.3f} s")
        raw = series.median("raw: faster-whisper transcribe") + series.median("raw: piper first sentence")
        first_audio = series.median("server: to first audio")
        print(f"raw libraries, hearing + first sentence: {raw:.3f} s; server / raw = {first_audio / raw:.2f}")
        verdict = "ok" if first_audio <= TARGET_SECONDS else "MISSED"
        ok = ok and first_audio <= TARGET_SECONDS
        print(
            f"chat: end of speech to first answer audio {first_audio:.3f} s (target <= {TARGET_SECONDS} s: {verdict})"
        )
    if args.only in (None, "realtime"):
        load_before = os.getloadavg()
        series = bench_realtime(args.rounds)
        load_after = os.getloadavg()
        print(f"CPUs: {os.cpu_count()}; load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
        print("  after the end of speech:")
        for name in series.values:
            print(f"  {name:42}{series.median(name):>8.3f} s")
        first_audio = series.median("realtime: first audio")
        verdict = "ok" if first_audio <= TARGET_SECONDS else "MISSED"
        ok = ok and first_audio <= TARGET_SECONDS
        print(
            f"realtime: end of speech to first answer audio {first_audio:.3f} s "
            f"(target <= {TARGET_SECONDS} s: {verdict})"
        )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
