"""Fast tests of the Wyoming pieces that need no server: sentence splitting, event framing, PCM spooling."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from wyoming.event import Event, async_write_event

from speaches.audio.decoding import decode_audio
from speaches.config import Settings, parse_wyoming_uri
from speaches.errors import InvalidRequestError
from speaches.wyoming.framing import ProtocolError, read_event
from speaches.wyoming.pcm import IN_MEMORY_BYTES, AudioTooLongError, PcmFormat, PcmSpool
from speaches.wyoming.sentences import SentenceSplitter, split_sentences
from speaches.wyoming.server import is_loopback

# --- sentences ---


def test_sentences_end_at_marks_followed_by_space_and_at_line_breaks() -> None:
    text = 'Hello there. It costs $3.50 at example.com! Really? "Yes." OK\nNext line 你好。世界'
    assert split_sentences(text) == [
        "Hello there.",
        "It costs $3.50 at example.com!",
        "Really?",
        '"Yes."',
        "OK",
        "Next line 你好。",
        "世界",
    ]


def test_abbreviations_do_not_end_a_sentence() -> None:
    assert split_sentences("Dr. Smith met Mr. Jones. They talked.") == ["Dr. Smith met Mr. Jones.", "They talked."]


def test_streamed_tokens_give_each_sentence_once_complete() -> None:
    splitter = SentenceSplitter()
    completed: list[list[str]] = []
    for token in ["The lamp", " is on", ".", " Turn", " it off", ".", " Thanks"]:
        completed.append(splitter.add(token))
    # "on." is complete only once the space after it shows it is not "on.5" or a domain name.
    assert completed == [[], [], [], ["The lamp is on."], [], [], ["Turn it off."]]
    assert splitter.finish() == "Thanks"
    assert splitter.finish() == ""


def test_text_without_ends_is_cut_at_spaces_within_the_limit() -> None:
    words = [f"word{number}" for number in range(200)]
    splitter = SentenceSplitter(max_chars=50)
    pieces: list[str] = []
    for word in words:
        pieces += splitter.add(word + " ")
        assert splitter.pending_chars <= 50
    pieces.append(splitter.finish())
    assert all(len(piece) <= 50 for piece in pieces)
    assert " ".join(pieces).split() == words


def test_a_word_longer_than_the_limit_is_cut_and_nothing_is_lost() -> None:
    assert split_sentences("x" * 25, max_chars=10) == ["x" * 10, "x" * 10, "x" * 5]


# --- framing ---


def reader_with(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


class _BufferWriter:
    """Enough of a StreamWriter for the wyoming package's writer."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def writelines(self, parts: list[bytes]) -> None:
        for part in parts:
            self.buffer.write(part)

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    async def drain(self) -> None:
        return None


async def test_events_written_by_the_wyoming_package_read_back() -> None:
    writer = _BufferWriter()
    sent = [
        Event(type="audio-chunk", data={"rate": 16000, "width": 2, "channels": 1}, payload=b"\x01\x02" * 100),
        Event(type="describe"),
        Event(type="synthesize", data={"text": "héllo wörld"}),
    ]
    for event in sent:
        await async_write_event(event, writer)  # type: ignore[arg-type]
    reader = reader_with(b"\n" + writer.buffer.getvalue())
    received = [await read_event(reader) for _ in sent]
    assert [(event.type, event.data, event.payload) for event in received if event] == [
        (event.type, event.data, event.payload) for event in sent
    ]
    assert await read_event(reader) is None


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"not json\n", "not valid JSON"),
        (b"[1, 2]\n", "JSON object"),
        (b'{"data": {}}\n', "no 'type'"),
        (b'{"type": "x", "data": [1]}\n', "'data' must be"),
        (b'{"type": "x", "payload_length": 99999999999}\n', "over this server's limit"),
        (b'{"type": "x", "data_length": 2000000}\n', "over this server's limit"),
        (b'{"type": "x", "payload_length": -5}\n', "non-negative"),
        (b'{"type": "x", "payload_length": "10"}\n', "non-negative"),
        (b'{"type": "x", "data_length": 3}\n[1]', "JSON object"),
        (b"{" + b" " * 70_000 + b"}\n", "longer than"),
    ],
)
async def test_malformed_events_are_protocol_errors_before_anything_big_is_read(data: bytes, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        await read_event(reader_with(data))


async def test_an_event_cut_short_is_a_closed_connection() -> None:
    assert await read_event(reader_with(b'{"type": "audio-chunk", "payload_length": 100}\n' + b"\0" * 10)) is None


# --- pcm ---


def test_pcm_format_is_checked() -> None:
    assert PcmFormat.from_event_data({"rate": 16000, "width": 2, "channels": 1}) == PcmFormat(16000, 2, 1)
    for bad in (
        {"rate": 16000, "width": 2},
        {"rate": "16000", "width": 2, "channels": 1},
        {"rate": 16000, "width": True, "channels": 1},
        {"rate": 10, "width": 2, "channels": 1},
        {"rate": 16000, "width": 1, "channels": 1},
        {"rate": 16000, "width": 2, "channels": 0},
    ):
        with pytest.raises(InvalidRequestError):
            PcmFormat.from_event_data(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("width", [2, 3, 4])
async def test_spooled_pcm_decodes_to_the_same_samples(width: int) -> None:
    """In memory and spilled to disk alike, the WAV the spool makes decodes back to what was sent."""
    rate = 16000
    seconds = 2 * IN_MEMORY_BYTES / (rate * width)  # enough to spill to disk
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    scale = 2 ** (8 * width - 1) - 1
    integers = np.round(tone * scale).astype("<i4")
    # The low `width` bytes of each little-endian int32: two's complement keeps the sign.
    pcm = integers.view(np.uint8).reshape(-1, 4)[:, :width].tobytes()
    spool = PcmSpool(PcmFormat(rate, width, 1), max_bytes=10 * IN_MEMORY_BYTES)
    for offset in range(0, len(pcm), 3333):  # chunks that split samples
        await spool.append(pcm[offset : offset + 3333])
    assert spool.seconds == pytest.approx(seconds, abs=1 / rate)
    with spool.wav_file() as wav:
        decoded = decode_audio(wav, rate)
    assert len(decoded) == len(tone)
    assert np.max(np.abs(decoded - tone)) < 1e-3


async def test_spool_refuses_audio_past_its_limit() -> None:
    spool = PcmSpool(PcmFormat(16000, 2, 1), max_bytes=1000)
    await spool.append(b"\0" * 1000)
    with pytest.raises(AudioTooLongError):
        await spool.append(b"\0\0")
    spool.close()


# --- settings ---


def test_wyoming_uri_forms() -> None:
    assert parse_wyoming_uri("tcp://0.0.0.0:10300") == ("tcp", "0.0.0.0", 10300)
    assert parse_wyoming_uri("tcp://[::1]:10300") == ("tcp", "::1", 10300)
    assert parse_wyoming_uri("unix:///run/speaches/wyoming.sock") == ("unix", "/run/speaches/wyoming.sock", None)
    for bad in ("tcp://0.0.0.0", "tcp://:10300", "http://x:1", "stdio://", "unix://", "tcp://h:99999"):
        with pytest.raises(ValueError, match="WYOMING_URI"):
            parse_wyoming_uri(bad)
    assert Settings(wyoming_uri="").wyoming_uri is None
    with pytest.raises(ValueError, match="tcp:// or unix://"):
        Settings(wyoming_uri="10300")


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "homeassistant.local"]))
