"""speaches.audio: decoding uploads and encoding speech, against real files and real codecs.

Reference durations come from the files' own headers, read here without PyAV (stdlib ``wave`` for
wav, STREAMINFO for flac, the Xing/LAME tag for mp3); tests/data/README.md rounds them to 0.1 s.
Synthetic inputs are made with PyAV's encoders, and encoded outputs are checked by decoding them
with PyAV directly, not with the module under test.
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

from speaches.audio import (
    SPEECH_RESPONSE_FORMATS,
    AudioDecodeError,
    AudioEncoder,
    audio_duration_seconds,
    content_type_for,
    decode_audio,
    iter_audio_chunks,
    supported_output_sample_rate,
)
from speaches.errors import InvalidRequestError

DATA = Path(__file__).parent / "data"
DURATION_TOLERANCE_SECONDS = 0.05


# --- reference durations, read from headers without PyAV ---------------------------------------------


def _wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def _flac_streaminfo(data: bytes) -> tuple[int, int]:
    """(sample rate, total samples) from a flac's STREAMINFO block, which follows the 'fLaC' marker."""
    assert data[:4] == b"fLaC"
    streaminfo = data[8 : 8 + 34]
    packed = int.from_bytes(streaminfo[10:18], "big")  # rate:20, channels-1:3, bits-1:5, total:36
    return packed >> 44, packed & ((1 << 36) - 1)


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
        rate, total = _flac_streaminfo(path.read_bytes())
        return total / rate
    return _mp3_gapless_duration(path.read_bytes())


# --- signal helpers -------------------------------------------------------------------------------------


def _sine(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * rate / len(samples)


def _amplitude_at(samples: np.ndarray, rate: int, frequency: float) -> float:
    """Peak amplitude of one sinusoidal component (Hann window: coherent gain 0.5)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    bin_index = round(frequency * len(samples) / rate)
    return float(spectrum[bin_index - 2 : bin_index + 3].max()) * 2 / (0.5 * len(samples))


def _encode_with_pyav(container_format: str, codec: str, rate: int, planes: np.ndarray, layout: str = "mono") -> bytes:
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


def _decode_with_pyav(data: bytes) -> tuple[np.ndarray, int, int]:
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


# --- decoding -------------------------------------------------------------------------------------------

BUNDLED_AUDIO = sorted(path for path in DATA.iterdir() if path.suffix in {".flac", ".mp3", ".wav"})


@pytest.mark.parametrize("path", BUNDLED_AUDIO, ids=lambda path: path.name)
def test_decodes_bundled_audio_to_16k_mono_float(path: Path) -> None:
    samples = decode_audio(path)

    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert audio_duration_seconds(samples) == pytest.approx(_reference_duration(path), abs=DURATION_TOLERANCE_SECONDS)
    assert np.abs(samples).max() <= 1.0
    assert np.sqrt(np.mean(samples**2)) > 0.005, "speech, not silence"


def test_decodes_path_bytes_and_file_objects_alike() -> None:
    path = DATA / "jfk.flac"
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
    flac = _encode_with_pyav("flac", "flac", 44_100, _sine(1234.0, 2.0, 44_100).reshape(1, -1))

    at_16k = decode_audio(flac)
    at_24k = decode_audio(flac, sample_rate=24_000)

    assert len(at_16k) == pytest.approx(32_000, abs=2)
    assert _dominant_frequency(at_16k, 16_000) == pytest.approx(1234.0, abs=2)
    assert len(at_24k) == pytest.approx(48_000, abs=2)
    assert _dominant_frequency(at_24k, 24_000) == pytest.approx(1234.0, abs=2)


def test_stereo_is_mixed_down_to_the_average_of_its_channels() -> None:
    rate = 44_100
    left, right = _sine(440.0, 2.0, rate, amplitude=0.8), _sine(1000.0, 2.0, rate, amplitude=0.6)
    wav = _encode_with_pyav("wav", "pcm_s16le", rate, np.stack([left, right]), layout="stereo")

    mono = decode_audio(wav)

    assert _amplitude_at(mono, 16_000, 440.0) == pytest.approx(0.4, abs=0.02)
    assert _amplitude_at(mono, 16_000, 1000.0) == pytest.approx(0.3, abs=0.02)


def test_identical_full_scale_channels_do_not_clip_when_mixed() -> None:
    sine = _sine(440.0, 1.0, 48_000, amplitude=0.95)
    wav = _encode_with_pyav("wav", "pcm_f32le", 48_000, np.stack([sine, sine]), layout="stereo")

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
    data = _encode_with_pyav(container_format, codec, rate, _sine(523.0, 1.5, rate).reshape(1, -1))

    samples = decode_audio(data)

    # Lossy codecs add up to a frame of priming/padding.
    assert audio_duration_seconds(samples) == pytest.approx(1.5, abs=0.06)
    assert _dominant_frequency(samples, 16_000) == pytest.approx(523.0, abs=2)


def test_float_samples_beyond_full_scale_are_clipped() -> None:
    wav = _encode_with_pyav("wav", "pcm_f32le", 16_000, _sine(440.0, 0.5, 16_000, amplitude=1.5).reshape(1, -1))

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
                _sine(440.0, audio_seconds, 16_000).reshape(1, -1), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = 16_000, 0, Fraction(1, 16_000)
            container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return output.getvalue()


def test_truncated_mp3_gives_the_audio_before_the_cut() -> None:
    mp3 = (DATA / "multilingual.mp3").read_bytes()
    full = decode_audio(mp3)

    first_half = decode_audio(mp3[: len(mp3) // 2])

    assert audio_duration_seconds(first_half) == pytest.approx(audio_duration_seconds(full) / 2, abs=1.0)
    # Same frames, same samples: only the resampler's last few samples near the cut may differ.
    compared = len(first_half) - 100
    np.testing.assert_allclose(first_half[:compared], full[:compared], atol=1e-5)


def test_truncated_flac_gives_the_audio_before_the_cut() -> None:
    flac = (DATA / "jfk.flac").read_bytes()

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
        (DATA / "multilingual.mp3").read_bytes()[:200],  # an ID3 tag and part of the Info frame
    ],
    ids=["random-bytes", "text-file", "mp3-cut-in-its-first-frame"],
)
def test_bytes_that_are_not_audio_are_rejected_with_the_supported_formats(data: bytes) -> None:
    message = _error_for(data).message
    assert "could not be decoded as audio" in message
    assert "mp3" in message
    assert "wav" in message


def test_wav_cut_to_its_header_is_reported_as_truncated() -> None:
    header_only = (DATA / "whats_your_name_french.wav").read_bytes()[:44]
    assert "truncated or corrupt" in _error_for(header_only).message


def test_video_without_audio_is_rejected_as_having_no_audio_track() -> None:
    message = _error_for(_mp4_with_video(audio_seconds=None)).message
    assert "no audio track" in message
    assert "video" in message


def test_chunks_concatenate_to_the_whole_decode() -> None:
    path = DATA / "multilingual.mp3"
    whole = decode_audio(path)

    chunks = list(iter_audio_chunks(path, chunk_seconds=7.0))

    assert all(len(chunk) == 7 * 16_000 for chunk in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 7 * 16_000
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_chunks_of_an_upload_that_is_not_audio_raise_on_first_next() -> None:
    chunks = iter_audio_chunks(b"not audio at all" * 100, chunk_seconds=1.0)
    with pytest.raises(AudioDecodeError):
        next(chunks)


# --- encoding -------------------------------------------------------------------------------------------

INPUT_RATE = 24_000
TONE_HZ = 440.0
# Codec priming and padding: up to one mp3 granule pair (1152) or aac frame (1024) plus the encoder delay.
ENCODED_DURATION_TOLERANCE_SECONDS = 0.1


def _encode_in_chunks(encoder: AudioEncoder, samples: np.ndarray, chunks: int = 5) -> tuple[list[bytes], bytes]:
    """(bytes returned by each encode() call, bytes returned by finish())."""
    parts = [encoder.encode(chunk) for chunk in np.array_split(samples, chunks)]
    return parts, encoder.finish()


@pytest.mark.parametrize("response_format", SPEECH_RESPONSE_FORMATS)
@pytest.mark.parametrize("streamable", [False, True], ids=["default", "streamable"])
def test_encoded_speech_decodes_to_the_same_tone(response_format: str, streamable: bool) -> None:
    tone = _sine(TONE_HZ, 2.0, INPUT_RATE)
    encoder = AudioEncoder(response_format, INPUT_RATE, streamable=streamable)

    parts, tail = _encode_in_chunks(encoder, tone)
    data = b"".join([*parts, tail])

    decoded, rate, channels = _decode_response(response_format, data)
    if encoder.streamable:
        assert parts[0], "a streaming format returns bytes from the first chunk on"
        # What came out before finish() is playable and holds all but the codec's last frames.
        streamed, _rate, _channels = _decode_response(response_format, b"".join(parts))
        assert len(streamed) / rate >= 1.8
    assert channels == 1
    # FFmpeg's opus decoder always outputs 48 kHz; the stream's own rate is in its OpusHead.
    assert rate == (48_000 if response_format == "opus" else INPUT_RATE)
    assert len(decoded) / rate == pytest.approx(2.0, abs=ENCODED_DURATION_TOLERANCE_SECONDS)
    assert _dominant_frequency(decoded, rate) == pytest.approx(TONE_HZ, abs=2)
    assert _amplitude_at(decoded, rate, TONE_HZ) == pytest.approx(0.5, abs=0.05)


def _decode_response(response_format: str, data: bytes) -> tuple[np.ndarray, int, int]:
    if response_format == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, INPUT_RATE, 1
    return _decode_with_pyav(data)


@pytest.mark.parametrize("response_format", [fmt for fmt in SPEECH_RESPONSE_FORMATS if fmt != "pcm"])
def test_streamed_responses_decode_back_although_they_declare_no_duration(response_format: str) -> None:
    """Raw ADTS, Ogg, a flac with 0 total samples, a wav with 0xFFFFFFFF sizes: the upload decoder reads them all."""
    parts, tail = _encode_in_chunks(
        AudioEncoder(response_format, INPUT_RATE, streamable=True), _sine(TONE_HZ, 2.0, INPUT_RATE)
    )

    samples = decode_audio(b"".join([*parts, tail]))

    assert audio_duration_seconds(samples) == pytest.approx(2.0, abs=ENCODED_DURATION_TOLERANCE_SECONDS)
    assert _dominant_frequency(samples, 16_000) == pytest.approx(TONE_HZ, abs=2)


def test_content_types_and_format_list_match() -> None:
    assert SPEECH_RESPONSE_FORMATS == ("mp3", "opus", "aac", "flac", "wav", "pcm")
    assert {fmt: content_type_for(fmt) for fmt in SPEECH_RESPONSE_FORMATS} == {
        "mp3": "audio/mpeg",
        "opus": "audio/ogg",
        "aac": "audio/aac",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "audio/pcm",
    }
    with pytest.raises(InvalidRequestError) as raised:
        AudioEncoder("ogg-vorbis", INPUT_RATE)
    assert raised.value.param == "response_format"


def test_mp3_stream_is_bare_mpeg_frames() -> None:
    first, _tail = _encode_in_chunks(AudioEncoder("mp3", INPUT_RATE), _sine(TONE_HZ, 1.0, INPUT_RATE))
    assert first[0][0] == 0xFF
    assert first[0][1] & 0xE0 == 0xE0, "starts with an MPEG frame sync, no ID3 tag"


def test_opus_records_the_input_rate_in_its_header() -> None:
    encoder = AudioEncoder("opus", 22_050)
    parts, tail = _encode_in_chunks(encoder, _sine(TONE_HZ, 1.0, 22_050))
    data = b"".join([*parts, tail])

    head = data.index(b"OpusHead")
    channels, _pre_skip, input_rate = struct.unpack("<BHI", data[head + 9 : head + 16])
    assert encoder.output_sample_rate == 24_000
    assert (channels, input_rate) == (1, 24_000)


def test_wav_written_whole_has_exact_sizes() -> None:
    tone = _sine(TONE_HZ, 2.0, INPUT_RATE)
    parts, data = _encode_in_chunks(AudioEncoder("wav", INPUT_RATE), tone)

    assert not any(parts), "a wav with an exact header is only complete at finish()"
    riff_size, data_size = struct.unpack("<I", data[4:8])[0], struct.unpack("<I", data[40:44])[0]
    assert data[36:40] == b"data"
    assert riff_size == len(data) - 8
    assert data_size == len(data) - 44 == 2 * len(tone)
    with wave.open(io.BytesIO(data), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, INPUT_RATE)
        assert wav.getnframes() == len(tone)


def test_streamed_wav_declares_unknown_length_and_decoders_read_to_the_end() -> None:
    tone = _sine(TONE_HZ, 2.0, INPUT_RATE)
    parts, tail = _encode_in_chunks(AudioEncoder("wav", INPUT_RATE, streamable=True), tone)
    data = b"".join([*parts, tail])

    assert len(parts[0]) == 44 + 2 * len(np.array_split(tone, 5)[0])
    assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    decoded, rate, _channels = _decode_with_pyav(data)
    assert (len(decoded), rate) == (len(tone), INPUT_RATE)
    with wave.open(io.BytesIO(data), "rb") as wav:
        assert len(wav.readframes(10 * len(tone))) == 2 * len(tone)


def test_flac_streaminfo_has_the_total_only_when_written_whole() -> None:
    tone = _sine(TONE_HZ, 2.0, INPUT_RATE)
    whole_parts, whole = _encode_in_chunks(AudioEncoder("flac", INPUT_RATE), tone)
    streamed_parts, streamed_tail = _encode_in_chunks(AudioEncoder("flac", INPUT_RATE, streamable=True), tone)
    streamed = b"".join([*streamed_parts, streamed_tail])

    assert not any(whole_parts)
    assert _flac_streaminfo(whole) == (INPUT_RATE, len(tone))
    assert streamed_parts[0]
    assert _flac_streaminfo(streamed) == (INPUT_RATE, 0), "0 total samples: 'unknown' per the FLAC spec"
    assert len(_decode_with_pyav(streamed)[0]) == len(tone)


def test_pcm_is_resampled_to_the_requested_rate() -> None:
    encoder = AudioEncoder("pcm", 22_050, 24_000)
    parts, tail = _encode_in_chunks(encoder, _sine(TONE_HZ, 2.0, 22_050))

    samples = np.frombuffer(b"".join([*parts, tail]), "<i2").astype(np.float32) / 32768
    assert encoder.output_sample_rate == 24_000
    assert len(samples) == pytest.approx(48_000, abs=4)
    assert _dominant_frequency(samples, 24_000) == pytest.approx(TONE_HZ, abs=2)


def test_mp3_is_resampled_down_to_8k() -> None:
    parts, tail = _encode_in_chunks(AudioEncoder("mp3", INPUT_RATE, 8_000), _sine(TONE_HZ, 2.0, INPUT_RATE))

    decoded, rate, _channels = _decode_with_pyav(b"".join([*parts, tail]))
    assert rate == 8_000
    assert len(decoded) / rate == pytest.approx(2.0, abs=0.2)  # 8 kHz mp3 frames are 72 ms
    assert _dominant_frequency(decoded, rate) == pytest.approx(TONE_HZ, abs=2)


def test_int16_input_gives_the_same_pcm_as_float_input() -> None:
    tone = _sine(TONE_HZ, 0.5, INPUT_RATE)
    as_int16 = np.round(tone * 32767).astype(np.int16)

    int16_parts, int16_tail = _encode_in_chunks(AudioEncoder("pcm", INPUT_RATE), as_int16, chunks=3)
    float_parts, float_tail = _encode_in_chunks(AudioEncoder("pcm", INPUT_RATE), as_int16 / 32767, chunks=3)
    from_int16 = b"".join([*int16_parts, int16_tail])
    from_float = b"".join([*float_parts, float_tail])

    assert from_int16 == as_int16.astype("<i2").tobytes()
    np.testing.assert_allclose(np.frombuffer(from_float, "<i2"), np.frombuffer(from_int16, "<i2"), atol=1)


@pytest.mark.parametrize(
    ("response_format", "requested", "expected"),
    [
        ("opus", 22_050, 24_000),
        ("opus", 16_000, 16_000),
        ("opus", 96_000, 48_000),
        ("mp3", 22_050, 22_050),
        ("mp3", 20_000, 22_050),
        ("aac", 7_000, 7_350),
        ("flac", 22_050, 22_050),
        ("pcm", 12_345, 12_345),
    ],
)
def test_output_rate_is_the_nearest_the_codec_accepts_at_or_above(
    response_format: str, requested: int, expected: int
) -> None:
    assert supported_output_sample_rate(response_format, requested) == expected


def test_encoder_misuse_is_refused() -> None:
    encoder = AudioEncoder("mp3", INPUT_RATE)
    assert encoder.encode(np.zeros(0, dtype=np.float32)) == b""
    with pytest.raises(TypeError):
        encoder.encode(np.zeros(10, dtype=np.int32))
    with pytest.raises(ValueError, match="mono"):
        encoder.encode(np.zeros((10, 2), dtype=np.float32))
    encoder.encode(np.zeros((480, 1), dtype=np.float32))  # a column of mono samples is fine
    encoder.finish()
    with pytest.raises(RuntimeError):
        encoder.encode(np.zeros(10, dtype=np.float32))


def test_abandoned_encoder_closes_cleanly() -> None:
    with AudioEncoder("opus", INPUT_RATE) as encoder:
        assert encoder.encode(_sine(TONE_HZ, 0.5, INPUT_RATE))
    encoder.close()
    with pytest.raises(RuntimeError):
        encoder.finish()
