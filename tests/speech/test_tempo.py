"""speaches.speech.tempo: speed changes split into steps atempo blends well, keeping the pitch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speaches.speech.tempo import change_tempo, tempo_steps

RATE = 22050


@pytest.mark.parametrize("tempo", [0.25, 0.4, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 4.0])
def test_tempo_steps_stay_in_atempos_blending_range_and_multiply_to_the_tempo(tempo: float) -> None:
    steps = tempo_steps(tempo)
    assert all(0.5 <= step <= 2.0 for step in steps)
    assert math.prod(steps) == pytest.approx(tempo)


def _dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("tempo", [0.25, 0.5, 2.0, 4.0])
def test_change_tempo_scales_duration_and_keeps_pitch(tempo: float) -> None:
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE)).astype(np.float32)
    changed = change_tempo(tone, RATE, tempo)
    assert changed.dtype == np.float32
    assert len(changed) == pytest.approx(len(tone) / tempo, rel=0.02)
    assert _dominant_frequency(changed, RATE) == pytest.approx(440, rel=0.02)


def test_change_tempo_at_normal_speed_or_on_nothing_is_a_no_op() -> None:
    samples = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert change_tempo(samples, RATE, 1.0) is samples
    assert len(change_tempo(np.zeros(0, dtype=np.float32), RATE, 2.0)) == 0
