"""Unit tests of how long audio is cut into windows, and of the decoder options a request maps to."""

from __future__ import annotations

import numpy as np
import pytest

from speaches.transcription.whisper import quietest_cut, split_at_quiet_points, temperature_schedule

RATE = 16_000


def tone(seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE), dtype=np.float32) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def chunked(audio: np.ndarray, chunk_seconds: float) -> list[np.ndarray]:
    size = int(chunk_seconds * RATE)
    return [audio[start : start + size] for start in range(0, len(audio), size)]


def windows_of(audio: np.ndarray, chunk_seconds: float, window_seconds: float) -> list[np.ndarray]:
    return list(
        split_at_quiet_points(
            chunked(audio, chunk_seconds),
            window_samples=int(window_seconds * RATE),
            search_samples=10 * RATE,
            frame_samples=RATE // 10,
        )
    )


@pytest.mark.parametrize(("chunk_seconds", "window_seconds"), [(30, 60), (7, 60), (200, 60), (30, 600)])
def test_windows_concatenate_to_the_audio_and_stay_within_the_window(
    chunk_seconds: float, window_seconds: float
) -> None:
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(250 * RATE) * 0.1).astype(np.float32)
    windows = windows_of(audio, chunk_seconds, window_seconds)
    np.testing.assert_array_equal(np.concatenate(windows), audio)
    assert all(0 < len(window) <= window_seconds * RATE for window in windows)
    # Every window but the last ends within the search span before the limit.
    assert all(len(window) > (window_seconds - 10) * RATE for window in windows[:-1])
    assert all(len(window) >= 10 * RATE for window in windows)


def test_a_window_ends_in_the_pause_before_its_limit() -> None:
    # Speech until 52 s, a pause 52-53 s, speech again: a 60 s window must end inside the pause.
    audio = np.concatenate([tone(52), silence(1), tone(40)])
    windows = windows_of(audio, 30, 60)
    assert len(windows) == 2
    assert 52 * RATE <= len(windows[0]) <= 53 * RATE
    np.testing.assert_array_equal(np.concatenate(windows), audio)


def test_a_quiet_stretch_wins_over_a_loud_one() -> None:
    audio = np.concatenate([tone(55, 0.5), tone(1, 0.01), tone(10, 0.5)])
    cut = quietest_cut(audio, 50 * RATE, 60 * RATE, RATE // 10)
    assert 55 * RATE <= cut <= 56 * RATE


@pytest.mark.parametrize("extra_seconds", [0.25, 5, 9.9, 10.5, 30])
def test_the_last_window_is_never_a_sliver(extra_seconds: float) -> None:
    # Silence everywhere: every frame ties, which would put each cut at the very end of its span.
    audio = silence(60 + extra_seconds)
    windows = windows_of(audio, 30, 60)
    assert len(windows) == 2
    assert all(10 * RATE <= len(window) <= 60 * RATE for window in windows), [len(w) / RATE for w in windows]
    np.testing.assert_array_equal(np.concatenate(windows), audio)


def test_short_audio_is_one_window() -> None:
    audio = tone(11)
    windows = windows_of(audio, 30, 600)
    assert len(windows) == 1
    np.testing.assert_array_equal(windows[0], audio)


def test_audio_of_exactly_one_window_is_not_cut() -> None:
    audio = tone(60)
    assert [len(window) for window in windows_of(audio, 30, 60)] == [60 * RATE]


def test_empty_chunks_are_skipped() -> None:
    chunks = [np.zeros(0, dtype=np.float32), tone(1), np.zeros(0, dtype=np.float32)]
    windows = list(split_at_quiet_points(chunks, window_samples=RATE * 60, search_samples=RATE, frame_samples=1600))
    assert [len(window) for window in windows] == [RATE]
    assert list(split_at_quiet_points([], window_samples=RATE, search_samples=RATE, frame_samples=1600)) == []


@pytest.mark.parametrize(
    ("start", "schedule"),
    [(0.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), (0.5, [0.5, 0.7, 0.9]), (0.8, [0.8, 1.0]), (1.0, [1.0])],
)
def test_temperature_falls_back_upwards_from_the_requested_one(start: float, schedule: list[float]) -> None:
    assert temperature_schedule(start) == schedule
