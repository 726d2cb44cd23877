"""Wyoming protocol speed against the dedicated servers Home Assistant users run today, in one run.

`wyoming-bench` (PyPI) measures speaches' Wyoming server and its peers on the same machine, models
and settings:

- speech to text: speaches vs wyoming-faster-whisper, both on the bundled
  `Systran/faster-whisper-tiny.en` folder, int8, 2 CPU threads, beam 5, language `en`, over the
  English test recordings (jfk.flac, turn_on_the_living_room_lamp.wav as 16 kHz WAV);
- text to speech: speaches vs wyoming-piper, both on the bundled `en_US-joe-medium` voice, with
  wyoming-bench's own texts, non-streaming (`synthesize`) and streaming (`synthesize-start/-chunk/-stop`).

The peers and wyoming-bench are installed in a throwaway virtual environment outside the
repository (`--peer-venv`, created with uv on first use); they read the bundled model files
directly, so nothing is downloaded. Servers take turns pass by pass (order alternating), so a change
in the machine's load hits both alike; each figure is the median over the passes of wyoming-bench's
per-pass median, and the ratio is speaches / peer (below 1: speaches is faster). Beside wyoming-bench's
wall times it reports the CPU time each server process spent on a whole wyoming-bench run (the same
requests for both): on a shared machine wall time swings with the load, CPU time much less.

Run from the repository root: ``uv run python -m bench.wyoming [--passes 3 --rounds 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tests.helpers import AUDIO_DIR, JFK_TEXT, LAMP_TEXT, TINY_EN, Server, free_port

from speaches.audio.decoding import decode_audio
from speaches.config import Settings
from speaches.models.sources import BUNDLED_PIPER_VOICES, BUNDLED_WHISPER_MODELS

VOICE = "en_US-joe-medium"
CPU_THREADS = 2
PEERS = ["wyoming-faster-whisper==3.8.1", "wyoming-piper==2.5.2", "wyoming-bench==2026.10.0"]
DEFAULT_PEER_VENV = Path(tempfile.gettempdir()) / "speaches-wyoming-peers"
CORPUS = [("jfk.flac", JFK_TEXT), ("turn_on_the_living_room_lamp.wav", LAMP_TEXT)]

Figures = dict[str, list[float]]
"""metric name ("stt non_streaming Total", "tts streaming TTFT") -> one median per pass."""


def ensure_peer_venv(venv: Path) -> Path:
    """The peers' virtual environment (created on first use); returns its bin folder."""
    bin_dir = venv / "bin"
    if not all((bin_dir / tool).exists() for tool in ("wyoming-faster-whisper", "wyoming-piper", "wyoming-bench")):
        uv = shutil.which("uv")
        if uv is None:
            raise SystemExit("uv is needed to create the peers' virtual environment")
        subprocess.run([uv, "venv", "--quiet", "--python", "3.11", str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "--quiet", "--python", str(bin_dir / "python"), *PEERS], check=True)
    return bin_dir


def write_corpus(folder: Path) -> float:
    """The English test recordings as 16 kHz mono WAV with their transcripts; returns their seconds."""
    seconds = 0.0
    for name, text in CORPUS:
        samples = decode_audio(AUDIO_DIR / name, 16000)
        seconds += len(samples) / 16000
        with wave.open(str(folder / f"{Path(name).stem}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        (folder / f"{Path(name).stem}.txt").write_text(text)
    return seconds


@contextlib.contextmanager
def peer(command: list[str], port: int, log: Path) -> Iterator[int]:
    """A peer server on `port`, yielding its pid; stopped (by that pid) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **offline()})
    try:
        wait_for_port(port, process, log)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def offline() -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1"}


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise SystemExit(f"{process.args} did not listen on {port} within {timeout} s")


_BLOCK = re.compile(r"^\[(?P<mode>non_streaming|streaming)\] ok=(?P<ok>\d+) fail=(?P<fail>\d+)")
_ROW = re.compile(r"^\s+(?P<metric>TTFT|Total) \(ms\)\s+(?P<values>[\d.\s]+)$")
_WER = re.compile(r"Accuracy\s+WER=(?P<wer>[\d.]+)%")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wyoming_bench(bench: Path, args: list[str], kind: str, server_pid: int, figures: Figures) -> None:
    """One wyoming-bench run against one server; adds its per-mode medians (seconds) to `figures`, and
    the CPU time the server spent on the whole run: the same work for every server, and unlike wall
    time barely affected by what else the machine is doing."""
    cpu_before = cpu_seconds(server_pid)
    result = subprocess.run([str(bench), *args], capture_output=True, text=True, check=False, timeout=1800)
    figures.setdefault(f"{kind} server CPU per run s", []).append(cpu_seconds(server_pid) - cpu_before)
    if result.returncode != 0:
        raise SystemExit(f"wyoming-bench {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    mode = None
    for line in result.stdout.splitlines():
        if block := _BLOCK.match(line):
            mode = block["mode"]
            if int(block["fail"]):
                raise SystemExit(f"wyoming-bench reported failures:\n{result.stdout}")
        elif mode and (row := _ROW.match(line)):
            median_ms = float(row["values"].split()[2])  # min mean median p95 max
            figures.setdefault(f"{kind} {mode} {row['metric']}", []).append(median_ms / 1000)
        elif mode and (wer := _WER.search(line)):
            figures.setdefault(f"{kind} {mode} WER%", []).append(float(wer["wer"]))
        elif line.startswith("====") or line.startswith("Summary"):
            mode = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=3, help="alternating passes over both servers (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="wyoming-bench rounds per sample in a pass (default 3)")
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV, help="where the peers are installed")
    args = parser.parse_args()

    bin_dir = ensure_peer_venv(args.peer_venv)
    settings = Settings()
    whisper_folder = BUNDLED_WHISPER_MODELS[TINY_EN](settings)
    voice_folder = BUNDLED_PIPER_VOICES[VOICE](settings).parent
    work = Path(tempfile.mkdtemp(prefix="speaches-wyoming-bench-"))
    corpus = work / "corpus"
    corpus.mkdir()
    corpus_seconds = write_corpus(corpus)

    ours_port, whisper_port, piper_port = free_port(), free_port(), free_port()
    speaches_env = {
        "WYOMING_URI": f"tcp://127.0.0.1:{ours_port}",
        "WHISPER__MODEL": TINY_EN,
        "WHISPER__CPU_THREADS": str(CPU_THREADS),
        "STT_MODEL_TTL": "-1",
        "TTS_MODEL_TTL": "-1",
        "LOG_LEVEL": "warning",
    }
    faster_whisper = [
        str(bin_dir / "wyoming-faster-whisper"),
        *("--uri", f"tcp://127.0.0.1:{whisper_port}", "--model", str(whisper_folder)),
        *("--stt-library", "faster-whisper", "--data-dir", str(work / "fw-data"), "--local-files-only"),
        *("--compute-type", "int8", "--cpu-threads", str(CPU_THREADS), "--beam-size", "5", "--language", "en"),
    ]
    piper = [
        str(bin_dir / "wyoming-piper"),
        *("--uri", f"tcp://127.0.0.1:{piper_port}", "--voice", VOICE, "--data-dir", str(voice_folder)),
    ]
    bench = bin_dir / "wyoming-bench"
    stt_args = ["--corpus", str(corpus), "--rounds", str(args.rounds), "--config", json.dumps({"language": "en"})]
    tts_args = ["--rounds", str(args.rounds), "--config", json.dumps({"voice": {"name": VOICE}})]

    load_before = os.getloadavg()
    ours: Figures = {}
    theirs: Figures = {}
    with (
        Server(speaches_env) as server,
        peer(faster_whisper, whisper_port, work / "faster-whisper.log") as whisper_pid,
        peer(piper, piper_port, work / "piper.log") as piper_pid,
    ):
        assert server.process is not None
        ours_pid = server.process.pid
        # (figures, (stt port, pid), (tts port, pid)) for speaches and for the peers
        turns = [
            (ours, (ours_port, ours_pid), (ours_port, ours_pid)),
            (theirs, (whisper_port, whisper_pid), (piper_port, piper_pid)),
        ]
        for number in range(args.passes):
            for figures, (stt_port, stt_pid), (tts_port, tts_pid) in turns if number % 2 == 0 else reversed(turns):
                # Non-streaming only: wyoming-faster-whisper has no streaming mode, and the CPU time of
                # the run must be for the same requests on both servers.
                stt = ["stt", f"127.0.0.1:{stt_port}", "--mode", "non_streaming", *stt_args]
                run_wyoming_bench(bench, stt, "stt", stt_pid, figures)
                run_wyoming_bench(bench, ["tts", f"127.0.0.1:{tts_port}", *tts_args], "tts", tts_pid, figures)
            # speaches' streaming transcript events, which the peer does not have: timed, not compared.
            streaming = ["stt", f"127.0.0.1:{ours_port}", "--mode", "streaming", *stt_args]
            run_wyoming_bench(bench, streaming, "stt streaming-only", ours_pid, ours)
            print(f"pass {number + 1}/{args.passes} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)

    median = statistics.median
    print(
        f"speech to text: {TINY_EN}, int8, {CPU_THREADS} threads, beam 5, {len(CORPUS)} recordings "
        f"({corpus_seconds:.1f} s); text to speech: {VOICE}, wyoming-bench's texts"
    )
    print(f"{args.passes} alternating passes x {args.rounds} rounds; medians of per-pass medians")
    print(f"CPUs: {os.cpu_count()}; load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"{'metric':34}{'speaches':>10}{'peer':>10}{'ratio':>8}")
    for metric in sorted(set(ours) | set(theirs)):
        mine, peer_figure = ours.get(metric), theirs.get(metric)
        unit = "" if metric.endswith(("WER%", " s")) else " s"
        mine_text = f"{median(mine):.3f}" if mine else "n/a"
        peer_text = f"{median(peer_figure):.3f}" if peer_figure else "n/a"
        ratio = (
            f"{median(mine) / median(peer_figure):.2f}"
            if mine and peer_figure and median(peer_figure) > 0 and not metric.endswith("WER%")
            else ""
        )
        print(f"{metric + unit:34}{mine_text:>10}{peer_text:>10}{ratio:>8}")
    print("peers: wyoming-faster-whisper (speech to text), wyoming-piper (text to speech)")


if __name__ == "__main__":
    main()
