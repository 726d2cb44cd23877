"""Test signals and PyAV as the reference codec: tones, spectra, files made and read by PyAV itself,
and the sample count a flac declares in its STREAMINFO."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np


def flac_streaminfo(data: bytes) -> tuple[int, int]:
    """(sample rate, total samples) from a flac's STREAMINFO block, which follows the 'fLaC' marker."""
    assert data[:4] == b"fLaC"
    streaminfo = data[8 : 8 + 34]
    packed = int.from_bytes(streaminfo[10:18], "big")  # rate:20, channels-1:3, bits-1:5, total:36
    return packed >> 44, packed & ((1 << 36) - 1)


def sine_wave(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * rate / len(samples)


def amplitude_at(samples: np.ndarray, rate: int, frequency: float) -> float:
    """Peak amplitude of one sinusoidal component (Hann window: coherent gain 0.5)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    bin_index = round(frequency * len(samples) / rate)
    return float(spectrum[bin_index - 2 : bin_index + 3].max()) * 2 / (0.5 * len(samples))


def encode_with_pyav(container_format: str, codec: str, rate: int, planes: np.ndarray, layout: str = "mono") -> bytes:
    """A file made by PyAV's own encoder from float planes shaped (channels, samples)."""
    output = io.BytesIO()
    with av.open(output, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(planes.astype(np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return output.getvalue()


def decode_with_pyav(data: bytes) -> tuple[np.ndarray, int, int]:
    """(float32 samples of the first channel, sample rate, channel count) as PyAV decodes them."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")
        planes = [
            converted.to_ndarray()[0]
            for frame in container.decode(stream)
            for converted in to_float.resample(frame)
            if converted is not None
        ]
        return np.concatenate(planes), stream.codec_context.sample_rate, stream.codec_context.channels
