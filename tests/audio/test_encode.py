"""speaches.audio encoding: speech samples to mp3, opus, aac, flac, wav and pcm, whole or streamed, at the
requested rate; outputs are checked by decoding them with PyAV directly, not with the module under test."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from speaches.audio.decoding import audio_duration_seconds, decode_audio
from speaches.audio.encoding import (
    SPEECH_RESPONSE_FORMATS,
    AudioEncoder,
    content_type_for,
    supported_output_sample_rate,
)
from speaches.errors import InvalidRequestError
from tests.audio.signals import amplitude_at, decode_with_pyav, dominant_frequency, flac_streaminfo, sine_wave

INPUT_RATE = 24_000


TONE_HZ = 440.0


ENCODED_DURATION_TOLERANCE_SECONDS = 0.1


def _encode_in_chunks(encoder: AudioEncoder, samples: np.ndarray, chunks: int = 5) -> tuple[list[bytes], bytes]:
    """(bytes returned by each encode() call, bytes returned by finish())."""
    parts = [encoder.encode(chunk) for chunk in np.array_split(samples, chunks)]
    return parts, encoder.finish()


@pytest.mark.parametrize("response_format", SPEECH_RESPONSE_FORMATS)
@pytest.mark.parametrize("streamable", [False, True], ids=["default", "streamable"])
def test_encoded_speech_decodes_to_the_same_tone(response_format: str, streamable: bool) -> None:
    tone = sine_wave(TONE_HZ, 2.0, INPUT_RATE)
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
    assert dominant_frequency(decoded, rate) == pytest.approx(TONE_HZ, abs=2)
    assert amplitude_at(decoded, rate, TONE_HZ) == pytest.approx(0.5, abs=0.05)


def _decode_response(response_format: str, data: bytes) -> tuple[np.ndarray, int, int]:
    if response_format == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, INPUT_RATE, 1
    return decode_with_pyav(data)


@pytest.mark.parametrize("response_format", [fmt for fmt in SPEECH_RESPONSE_FORMATS if fmt != "pcm"])
def test_streamed_responses_decode_back_although_they_declare_no_duration(response_format: str) -> None:
    """Raw ADTS, Ogg, a wav with 0xFFFFFFFF sizes (flac comes whole): the upload decoder reads them all."""
    parts, tail = _encode_in_chunks(
        AudioEncoder(response_format, INPUT_RATE, streamable=True), sine_wave(TONE_HZ, 2.0, INPUT_RATE)
    )

    samples = decode_audio(b"".join([*parts, tail]))

    assert audio_duration_seconds(samples) == pytest.approx(2.0, abs=ENCODED_DURATION_TOLERANCE_SECONDS)
    assert dominant_frequency(samples, 16_000) == pytest.approx(TONE_HZ, abs=2)


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
    first, _tail = _encode_in_chunks(AudioEncoder("mp3", INPUT_RATE), sine_wave(TONE_HZ, 1.0, INPUT_RATE))
    assert first[0][0] == 0xFF
    assert first[0][1] & 0xE0 == 0xE0, "starts with an MPEG frame sync, no ID3 tag"


def test_opus_records_the_input_rate_in_its_header() -> None:
    encoder = AudioEncoder("opus", 22_050)
    parts, tail = _encode_in_chunks(encoder, sine_wave(TONE_HZ, 1.0, 22_050))
    data = b"".join([*parts, tail])

    head = data.index(b"OpusHead")
    channels, _pre_skip, input_rate = struct.unpack("<BHI", data[head + 9 : head + 16])
    assert encoder.output_sample_rate == 24_000
    assert (channels, input_rate) == (1, 24_000)


def test_wav_written_whole_has_exact_sizes() -> None:
    tone = sine_wave(TONE_HZ, 2.0, INPUT_RATE)
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
    tone = sine_wave(TONE_HZ, 2.0, INPUT_RATE)
    parts, tail = _encode_in_chunks(AudioEncoder("wav", INPUT_RATE, streamable=True), tone)
    data = b"".join([*parts, tail])

    assert len(parts[0]) == 44 + 2 * len(np.array_split(tone, 5)[0])
    assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    decoded, rate, _channels = decode_with_pyav(data)
    assert (len(decoded), rate) == (len(tone), INPUT_RATE)
    with wave.open(io.BytesIO(data), "rb") as wav:
        assert len(wav.readframes(10 * len(tone))) == 2 * len(tone)


@pytest.mark.parametrize("streamable", [False, True], ids=["default", "streamable-asked"])
def test_flac_is_always_written_whole_with_its_total_in_streaminfo(streamable: bool) -> None:
    tone = sine_wave(TONE_HZ, 2.0, INPUT_RATE)
    parts, whole = _encode_in_chunks(AudioEncoder("flac", INPUT_RATE, streamable=streamable), tone)

    assert not any(parts)
    assert flac_streaminfo(whole) == (INPUT_RATE, len(tone)), "an exact total: libsndfile cannot read 'unknown'"
    assert len(decode_with_pyav(whole)[0]) == len(tone)


def test_pcm_is_resampled_to_the_requested_rate() -> None:
    encoder = AudioEncoder("pcm", 22_050, 24_000)
    parts, tail = _encode_in_chunks(encoder, sine_wave(TONE_HZ, 2.0, 22_050))

    samples = np.frombuffer(b"".join([*parts, tail]), "<i2").astype(np.float32) / 32768
    assert encoder.output_sample_rate == 24_000
    assert len(samples) == pytest.approx(48_000, abs=4)
    assert dominant_frequency(samples, 24_000) == pytest.approx(TONE_HZ, abs=2)


def test_mp3_is_resampled_down_to_8k() -> None:
    parts, tail = _encode_in_chunks(AudioEncoder("mp3", INPUT_RATE, 8_000), sine_wave(TONE_HZ, 2.0, INPUT_RATE))

    decoded, rate, _channels = decode_with_pyav(b"".join([*parts, tail]))
    assert rate == 8_000
    assert len(decoded) / rate == pytest.approx(2.0, abs=0.2)  # 8 kHz mp3 frames are 72 ms
    assert dominant_frequency(decoded, rate) == pytest.approx(TONE_HZ, abs=2)


def test_int16_input_gives_the_same_pcm_as_float_input() -> None:
    tone = sine_wave(TONE_HZ, 0.5, INPUT_RATE)
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
        assert encoder.encode(sine_wave(TONE_HZ, 0.5, INPUT_RATE))
    encoder.close()
    with pytest.raises(RuntimeError):
        encoder.finish()
