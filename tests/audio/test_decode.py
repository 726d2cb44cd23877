"""speaches.audio decoding: uploads of every container, codec and sample format to 16 kHz mono float32, and
the errors for what is not audio, against real files and real codecs.

Reference durations come from the files' own headers, read here without PyAV (stdlib ``wave`` for
wav, STREAMINFO for flac, the Xing/LAME tag for mp3); tests/data/README.md rounds them to 0.1 s.
Synthetic inputs are made with PyAV's encoders.
"""

from __future__ import annotations

import io
import struct
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from speaches.audio.decoding import AudioDecodeError, audio_duration_seconds, decode_audio, iter_audio_chunks
from speaches.errors import InvalidRequestError
from tests.audio.signals import amplitude_at, dominant_frequency, encode_with_pyav, flac_streaminfo, sine_wave
from tests.helpers import AUDIO_DIR

DURATION_TOLERANCE_SECONDS = 0.05


def _wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def _mp3_gapless_duration(data: bytes) -> float:
    """Frames x 576 minus encoder delay and padding, from the Xing/Info and LAME tags (MPEG-2 layer III)."""
    tag = max(data.find(b"Xing"), data.find(b"Info"))
    flags, frames = struct.unpack(">II", data[tag + 4 : tag + 12])
    assert flags == 0b1111, "this reader expects frames, bytes, TOC and quality fields"
    lame = tag + 8 + 4 + 4 + 100 + 4
    delay_and_padding = data[lame + 21 : lame + 24]
    delay = (delay_and_padding[0] << 4) | (delay_and_padding[1] >> 4)
    padding = ((delay_and_padding[1] & 0x0F) << 8) | delay_and_padding[2]
    sample_rate = 24_000
    return (frames * 576 - delay - padding) / sample_rate


def _reference_duration(path: Path) -> float:
    if path.suffix == ".wav":
        return _wav_duration(path)
    if path.suffix == ".flac":
        rate, total = flac_streaminfo(path.read_bytes())
        return total / rate
    return _mp3_gapless_duration(path.read_bytes())


BUNDLED_AUDIO = sorted(path for path in AUDIO_DIR.iterdir() if path.suffix in {".flac", ".mp3", ".wav"})


@pytest.mark.parametrize("path", BUNDLED_AUDIO, ids=lambda path: path.name)
def test_decodes_bundled_audio_to_16k_mono_float(path: Path) -> None:
    samples = decode_audio(path)

    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert audio_duration_seconds(samples) == pytest.approx(_reference_duration(path), abs=DURATION_TOLERANCE_SECONDS)
    assert np.abs(samples).max() <= 1.0
    assert np.sqrt(np.mean(samples**2)) > 0.005, "speech, not silence"


def test_decodes_path_bytes_and_file_objects_alike() -> None:
    path = AUDIO_DIR / "jfk.flac"
    from_path = decode_audio(path)

    with tempfile.SpooledTemporaryFile() as upload:
        upload.write(path.read_bytes())  # left positioned at the end, as after an upload
        from_file = decode_audio(upload)
        assert not upload.closed
        again = decode_audio(upload)

    np.testing.assert_array_equal(from_path, decode_audio(str(path)))
    np.testing.assert_array_equal(from_path, decode_audio(path.read_bytes()))
    np.testing.assert_array_equal(from_path, from_file)
    np.testing.assert_array_equal(from_path, again)


def test_resamples_44k_to_requested_rate_keeping_frequency() -> None:
    flac = encode_with_pyav("flac", "flac", 44_100, sine_wave(1234.0, 2.0, 44_100).reshape(1, -1))

    at_16k = decode_audio(flac)
    at_24k = decode_audio(flac, sample_rate=24_000)

    assert len(at_16k) == pytest.approx(32_000, abs=2)
    assert dominant_frequency(at_16k, 16_000) == pytest.approx(1234.0, abs=2)
    assert len(at_24k) == pytest.approx(48_000, abs=2)
    assert dominant_frequency(at_24k, 24_000) == pytest.approx(1234.0, abs=2)


def test_stereo_is_mixed_down_to_the_average_of_its_channels() -> None:
    rate = 44_100
    left, right = sine_wave(440.0, 2.0, rate, amplitude=0.8), sine_wave(1000.0, 2.0, rate, amplitude=0.6)
    wav = encode_with_pyav("wav", "pcm_s16le", rate, np.stack([left, right]), layout="stereo")

    mono = decode_audio(wav)

    assert amplitude_at(mono, 16_000, 440.0) == pytest.approx(0.4, abs=0.02)
    assert amplitude_at(mono, 16_000, 1000.0) == pytest.approx(0.3, abs=0.02)


def test_identical_full_scale_channels_do_not_clip_when_mixed() -> None:
    sine = sine_wave(440.0, 1.0, 48_000, amplitude=0.95)
    wav = encode_with_pyav("wav", "pcm_f32le", 48_000, np.stack([sine, sine]), layout="stereo")

    mono = decode_audio(wav)

    assert np.abs(mono).max() == pytest.approx(0.95, abs=0.01)


@pytest.mark.parametrize(
    ("container_format", "codec", "rate"),
    [
        ("ogg", "libopus", 48_000),
        ("webm", "libopus", 48_000),
        ("mp4", "aac", 44_100),
        ("mp3", "libmp3lame", 22_050),
        ("wav", "pcm_u8", 8_000),
        ("wav", "pcm_s24le", 96_000),
        ("wav", "pcm_f32le", 44_100),
    ],
)
def test_decodes_other_containers_and_sample_formats(container_format: str, codec: str, rate: int) -> None:
    data = encode_with_pyav(container_format, codec, rate, sine_wave(523.0, 1.5, rate).reshape(1, -1))

    samples = decode_audio(data)

    # Lossy codecs add up to a frame of priming/padding.
    assert audio_duration_seconds(samples) == pytest.approx(1.5, abs=0.06)
    assert dominant_frequency(samples, 16_000) == pytest.approx(523.0, abs=2)


def test_float_samples_beyond_full_scale_are_clipped() -> None:
    wav = encode_with_pyav("wav", "pcm_f32le", 16_000, sine_wave(440.0, 0.5, 16_000, amplitude=1.5).reshape(1, -1))

    samples = decode_audio(wav)

    assert samples.min() == -1.0
    assert samples.max() == 1.0


def test_audio_track_of_a_video_file_is_decoded() -> None:
    samples = decode_audio(_mp4_with_video(audio_seconds=1.0))
    assert audio_duration_seconds(samples) == pytest.approx(1.0, abs=0.06)


def _mp4_with_video(audio_seconds: float | None) -> bytes:
    """A short mpeg4 video in mp4, with an aac track of ``audio_seconds`` or none."""
    output = io.BytesIO()
    with av.open(output, "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=16_000, layout="mono") if audio_seconds else None
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        for index in range(5):
            picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * index, np.uint8), format="rgb24")
            picture.pts = index
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
        if audio is not None and audio_seconds is not None:
            frame = av.AudioFrame.from_ndarray(
                sine_wave(440.0, audio_seconds, 16_000).reshape(1, -1), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = 16_000, 0, Fraction(1, 16_000)
            container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return output.getvalue()


def test_truncated_mp3_gives_the_audio_before_the_cut() -> None:
    mp3 = (AUDIO_DIR / "multilingual.mp3").read_bytes()
    full = decode_audio(mp3)

    first_half = decode_audio(mp3[: len(mp3) // 2])

    assert audio_duration_seconds(first_half) == pytest.approx(audio_duration_seconds(full) / 2, abs=1.0)
    # Same frames, same samples: only the resampler's last few samples near the cut may differ.
    compared = len(first_half) - 100
    np.testing.assert_allclose(first_half[:compared], full[:compared], atol=1e-5)


def test_truncated_flac_gives_the_audio_before_the_cut() -> None:
    flac = (AUDIO_DIR / "jfk.flac").read_bytes()

    first_half = decode_audio(flac[: len(flac) // 2])

    assert 3.0 < audio_duration_seconds(first_half) < 8.0


def _error_for(source: object) -> AudioDecodeError:
    with pytest.raises(AudioDecodeError) as raised:
        decode_audio(source)  # type: ignore[arg-type]
    error = raised.value
    assert isinstance(error, InvalidRequestError)
    assert error.status_code == 400
    assert error.param == "file"
    assert error.body()["error"]["type"] == "invalid_request_error"
    return error


def test_empty_upload_is_rejected_as_empty(tmp_path: Path) -> None:
    empty_path = tmp_path / "empty.wav"
    empty_path.write_bytes(b"")
    with tempfile.SpooledTemporaryFile() as empty_upload:
        for source in (b"", empty_path, empty_upload):
            assert _error_for(source).message == "The uploaded file is empty."


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(7).bytes(64_000),
        b"Transcribe me, please. This is a plain text file, not audio.\n" * 50,
        (AUDIO_DIR / "multilingual.mp3").read_bytes()[:200],  # an ID3 tag and part of the Info frame
    ],
    ids=["random-bytes", "text-file", "mp3-cut-in-its-first-frame"],
)
def test_bytes_that_are_not_audio_are_rejected_with_the_supported_formats(data: bytes) -> None:
    message = _error_for(data).message
    assert "could not be decoded as audio" in message
    assert "mp3" in message
    assert "wav" in message


def test_wav_cut_to_its_header_is_reported_as_truncated() -> None:
    header_only = (AUDIO_DIR / "whats_your_name_french.wav").read_bytes()[:44]
    assert "truncated or corrupt" in _error_for(header_only).message


def test_video_without_audio_is_rejected_as_having_no_audio_track() -> None:
    message = _error_for(_mp4_with_video(audio_seconds=None)).message
    assert "no audio track" in message
    assert "video" in message


def test_chunks_concatenate_to_the_whole_decode() -> None:
    path = AUDIO_DIR / "multilingual.mp3"
    whole = decode_audio(path)

    chunks = list(iter_audio_chunks(path, chunk_seconds=7.0))

    assert all(len(chunk) == 7 * 16_000 for chunk in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 7 * 16_000
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_chunks_of_an_upload_that_is_not_audio_raise_on_first_next() -> None:
    chunks = iter_audio_chunks(b"not audio at all" * 100, chunk_seconds=1.0)
    with pytest.raises(AudioDecodeError):
        next(chunks)
