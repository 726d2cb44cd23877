"""POST /v1/chat/completions through the official openai SDK, with the stand-in LLM doing the thinking.

Audio answers are checked by decoding them and by transcribing them back with the server's own
/v1/audio/transcriptions (tiny.en); what reached the LLM is read from the stand-in's record.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.chat.audio_checks import b64, decoded_seconds, heard, loudness, mp3_of, pcm16_to_wav
from tests.chat.conftest import LLM_KEY
from tests.chat.llm_stand_in import StandInLlm, answer_for
from tests.helpers import AUDIO_DIR, LAMP_TEXT, Server, word_error_rate

pytestmark = pytest.mark.server

LAMP_PATH = AUDIO_DIR / "turn_on_the_living_room_lamp.wav"
LAMP_WAV = LAMP_PATH.read_bytes()
SPOKEN_WAV = {"voice": "alloy", "format": "wav"}
SPOKEN_PCM = {"voice": "alloy", "format": "pcm16"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]},
    },
}


def lamp_message(text: str | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.append({"type": "input_audio", "input_audio": {"data": b64(LAMP_WAV), "format": "wav"}})
    return {"role": "user", "content": parts}


def test_text_in_text_out_passes_the_request_through(voice_client: OpenAI, llm: StandInLlm) -> None:
    completion = voice_client.chat.completions.create(
        model="some-llm",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        temperature=0.3,
        max_completion_tokens=50,
        seed=7,
        extra_body={"top_k": 5},
    )
    assert completion.choices[0].message.content == answer_for([{"role": "user", "content": "Hello there"}])
    assert completion.choices[0].message.audio is None
    assert completion.usage is not None
    assert completion.usage.total_tokens == 30
    sent = llm.last("some-llm")
    assert sent.authorization == f"Bearer {LLM_KEY}"  # this server's key, not the client's
    assert sent.body == {
        "model": "some-llm",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        "temperature": 0.3,
        "max_completion_tokens": 50,
        "seed": 7,
        "top_k": 5,
        "stream": False,
    }


def test_text_in_audio_out(voice_client: OpenAI, llm: StandInLlm) -> None:
    completion = voice_client.chat.completions.create(
        model="m", modalities=["text", "audio"], audio=SPOKEN_WAV, messages=[{"role": "user", "content": "Good news"}]
    )
    message = completion.choices[0].message
    expected = answer_for([{"role": "user", "content": "Good news"}])
    assert message.content is None  # as OpenAI answers: the words are the transcript
    assert message.audio is not None
    assert message.audio.transcript == expected
    assert message.audio.id.startswith("audio_")
    assert 3000 < message.audio.expires_at - time.time() <= 3600
    wav = base64.b64decode(message.audio.data)
    rate, seconds = decoded_seconds(wav)
    assert rate == 22050
    assert 3 < seconds < 12
    assert word_error_rate(expected, heard(voice_client, wav)) < 0.35
    assert "modalities" not in llm.last("m").body
    assert "audio" not in llm.last("m").body


@pytest.mark.parametrize(("audio_format", "rate"), [("mp3", 22050), ("opus", 48000), ("flac", 22050)])
def test_spoken_answer_formats(voice_client: OpenAI, audio_format: str, rate: int) -> None:
    completion = voice_client.chat.completions.create(
        model="m",
        modalities=["text", "audio"],
        audio={"voice": "en_US-joe-medium", "format": audio_format},  # type: ignore[typeddict-item]
        messages=[{"role": "user", "content": "Formats"}],
    )
    assert completion.choices[0].message.audio is not None
    decoded_rate, seconds = decoded_seconds(base64.b64decode(completion.choices[0].message.audio.data))
    assert decoded_rate == rate
    assert 3 < seconds < 12


def test_spoken_answer_as_pcm16(voice_client: OpenAI) -> None:
    completion = voice_client.chat.completions.create(
        model="m", modalities=["text", "audio"], audio=SPOKEN_PCM, messages=[{"role": "user", "content": "Raw"}]
    )
    assert completion.choices[0].message.audio is not None
    pcm = base64.b64decode(completion.choices[0].message.audio.data)
    assert len(pcm) % 2 == 0
    assert 3 < len(pcm) / 2 / 24000 < 12  # 16-bit mono at 24 kHz, as OpenAI sends pcm16
    assert loudness(pcm) > 0.02


def test_audio_in_text_out(voice_client: OpenAI, llm: StandInLlm) -> None:
    completion = voice_client.chat.completions.create(model="hearing", messages=[lamp_message()])  # type: ignore[list-item]
    sent = llm.last("hearing").messages
    assert isinstance(sent[0]["content"], str)  # an audio-only message reaches the LLM as plain text
    assert word_error_rate(LAMP_TEXT, sent[0]["content"]) <= 0.2
    assert completion.choices[0].message.content == answer_for(sent)

    # Text beside the audio stays, in order, joined into one string.
    voice_client.chat.completions.create(model="hearing", messages=[lamp_message("Do what I say:")])  # type: ignore[list-item]
    content = llm.last("hearing").messages[0]["content"]
    assert content.startswith("Do what I say:\n")
    assert word_error_rate(LAMP_TEXT, content.removeprefix("Do what I say:\n")) <= 0.2


def test_input_audio_as_a_data_url_with_line_breaks(voice_client: OpenAI, llm: StandInLlm) -> None:
    encoded = b64(LAMP_WAV + b"\0\0")  # two bytes more: not the clip heard before, so it is transcribed again
    wrapped = "\n".join(encoded[start : start + 76] for start in range(0, len(encoded), 76))
    part = {"type": "input_audio", "input_audio": {"data": f"data:audio/wav;base64,{wrapped}", "format": "wav"}}
    voice_client.chat.completions.create(model="wrapped", messages=[{"role": "user", "content": [part]}])  # type: ignore[list-item,misc]
    assert word_error_rate(LAMP_TEXT, llm.last("wrapped").messages[0]["content"]) <= 0.2


def test_input_audio_as_mp3(voice_client: OpenAI, llm: StandInLlm) -> None:
    part = {"type": "input_audio", "input_audio": {"data": b64(mp3_of(LAMP_PATH)), "format": "mp3"}}
    voice_client.chat.completions.create(model="mp3", messages=[{"role": "user", "content": [part]}])  # type: ignore[list-item,misc]
    assert word_error_rate(LAMP_TEXT, llm.last("mp3").messages[0]["content"]) <= 0.2


def test_audio_in_audio_out(voice_client: OpenAI, llm: StandInLlm) -> None:
    completion = voice_client.chat.completions.create(
        model="speech-to-speech",
        modalities=["text", "audio"],
        audio=SPOKEN_WAV,
        messages=[lamp_message()],  # type: ignore[list-item]
    )
    audio = completion.choices[0].message.audio
    assert audio is not None
    assert audio.transcript == answer_for(llm.last("speech-to-speech").messages)
    assert "living room lamp" in heard(voice_client, base64.b64decode(audio.data)).lower()


def test_stream_speaks_each_sentence_as_it_completes(voice_client: OpenAI, llm: StandInLlm) -> None:
    """The `paced` LLM writes a sentence every 1.5 s: audio of the first must arrive before the last is written."""
    stream = voice_client.chat.completions.create(
        model="paced",
        modalities=["text", "audio"],
        audio=SPOKEN_PCM,
        messages=[{"role": "user", "content": "Take your time"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    received: list[tuple[float, Any]] = [(time.monotonic(), chunk) for chunk in stream]
    chunks = [chunk for _, chunk in received]
    sent = llm.last("paced")
    expected = answer_for(sent.messages)

    audio_deltas = [
        (at, chunk.choices[0].delta.audio) for at, chunk in received if chunk.choices and chunk.choices[0].delta.audio
    ]
    with_data = [(at, audio) for at, audio in audio_deltas if audio.data]
    assert len({audio.id for _, audio in audio_deltas}) == 1
    transcripts = [audio.transcript for _, audio in audio_deltas if audio.transcript]
    # One per sentence, each with its audio; the first sentence starts with a quick piece ("You said:").
    assert transcripts[0] == "You said:"
    assert len(transcripts) == 4, transcripts
    assert "".join(transcripts).strip() == expected
    assert with_data[0][0] < sent.sentence_sent_at[-1], "the first sentence was not spoken before the LLM finished"
    assert not any(chunk.choices and chunk.choices[0].delta.content for chunk in chunks)  # the words are the transcript

    # The last audio delta carries only the expiry; then the finish chunk; then usage.
    last_audio = audio_deltas[-1][1]
    assert last_audio.expires_at is not None
    assert last_audio.data is None
    finish_positions = [i for i, chunk in enumerate(chunks) if chunk.choices and chunk.choices[0].finish_reason]
    assert [chunks[i].choices[0].finish_reason for i in finish_positions] == ["stop"]
    last_audio_position = max(i for i, chunk in enumerate(chunks) if chunk.choices and chunk.choices[0].delta.audio)
    assert last_audio_position < finish_positions[0]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 30

    pcm = b"".join(base64.b64decode(audio.data) for _, audio in with_data)
    assert word_error_rate(expected, heard(voice_client, pcm16_to_wav(pcm))) < 0.35


def test_stream_without_audio_relays_the_chunks(voice_client: OpenAI, llm: StandInLlm) -> None:
    stream = voice_client.chat.completions.create(
        model="texty", messages=[{"role": "user", "content": "Plain text"}], stream=True
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.split() == answer_for(llm.last("texty").messages).split()
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert llm.last("texty").body["stream"] is True


def test_multi_turn_refers_to_earlier_spoken_answers_by_id(
    voice_client: OpenAI, voice_server: Server, llm: StandInLlm
) -> None:
    first = voice_client.chat.completions.create(
        model="turns",
        modalities=["text", "audio"],
        audio=SPOKEN_WAV,
        messages=[lamp_message()],  # type: ignore[list-item]
    )
    assert first.choices[0].message.audio is not None
    first_id = first.choices[0].message.audio.id
    heard_before = voice_server.logs().count("heard ")

    # Turn two, streamed: the history repeats the audio and names the spoken answer only by id.
    history: list[Any] = [lamp_message(), {"role": "assistant", "audio": {"id": first_id}}]
    stream = voice_client.chat.completions.create(
        model="turns",
        modalities=["text", "audio"],
        audio=SPOKEN_PCM,
        messages=[*history, {"role": "user", "content": "And then?"}],
        stream=True,
    )
    deltas = [chunk.choices[0].delta.audio for chunk in stream if chunk.choices and chunk.choices[0].delta.audio]
    second_id = deltas[0].id
    second_words = "".join(audio.transcript or "" for audio in deltas).strip()
    sent = llm.last("turns").messages
    assert sent[1] == {"role": "assistant", "content": first.choices[0].message.audio.transcript}
    assert voice_server.logs().count("heard ") == heard_before  # the repeated audio was not transcribed again

    # Turn three names the streamed answer by its id.
    third: list[Any] = [
        *history,
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "audio": {"id": second_id}},
    ]
    voice_client.chat.completions.create(model="turns", messages=[*third, {"role": "user", "content": "Ok"}])
    assert llm.last("turns").messages[3] == {"role": "assistant", "content": second_words}
    assert second_words == answer_for([{"role": "user", "content": "And then?"}])

    with pytest.raises(openai.BadRequestError) as refused:
        voice_client.chat.completions.create(
            model="turns",
            messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "audio": {"id": "audio_gone"}}],
        )
    assert refused.value.body["param"] == "messages[1].audio.id"  # type: ignore[index]
    assert "content" in refused.value.body["message"]  # type: ignore[index]


def test_tool_call_round_trip(voice_client: OpenAI, llm: StandInLlm) -> None:
    question: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = voice_client.chat.completions.create(
        model="tools",
        modalities=["text", "audio"],
        audio=SPOKEN_WAV,
        messages=question,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.audio is None  # a call has nothing to say
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"question": "Weather in Paris?"}
    assert llm.last("tools").body["tools"] == [WEATHER_TOOL]

    # Streamed, the call arrives in deltas the SDK can put together.
    stream = voice_client.chat.completions.create(
        model="tools",
        modalities=["text", "audio"],
        audio=SPOKEN_PCM,
        messages=question,
        tools=[WEATHER_TOOL],
        stream=True,  # type: ignore[list-item]
    )
    arguments = "".join(
        tool.function.arguments or ""
        for chunk in stream
        if chunk.choices
        for tool in chunk.choices[0].delta.tool_calls or []
        if tool.function
    )
    assert json.loads(arguments) == {"question": "Weather in Paris?"}

    # The client runs the tool and sends its output: the answer is spoken.
    answer = voice_client.chat.completions.create(
        model="tools",
        modalities=["text", "audio"],
        audio=SPOKEN_WAV,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[
            *question,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "sunny and 21 degrees"},
        ],
    )
    assert answer.choices[0].message.audio is not None
    assert answer.choices[0].message.audio.transcript == "The tool says sunny and 21 degrees. That is all I know."
    sent = llm.last("tools").messages
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny and 21 degrees"}


def test_client_leaving_mid_answer_cancels_the_llm_and_returns_the_leases(
    voice_client: OpenAI, voice_server: Server, llm: StandInLlm
) -> None:
    stream = voice_client.chat.completions.create(
        model="slow",
        modalities=["text", "audio"],
        audio=SPOKEN_PCM,
        messages=[lamp_message()],
        stream=True,  # type: ignore[list-item]
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.audio and chunk.choices[0].delta.audio.data:
            break  # the first sentence is heard; the person walks away
    stream.close()
    exchange = llm.last("slow")
    llm.wait_until(lambda: exchange.cancelled)
    assert not exchange.finished
    assert len(exchange.sentence_sent_at) < 20  # of 60: the LLM stopped being read, then was hung up on

    # Non-streamed too: a client that times out hangs up on the LLM.
    impatient = voice_client.with_options(timeout=3)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="slow", messages=[{"role": "user", "content": "Think hard"}])
    waiting = llm.last("slow")
    llm.wait_until(lambda: waiting.cancelled)

    def leases() -> dict[str, int]:
        models = httpx.get(f"{voice_server.url}/api/ps").json()["models"]
        return {model["id"]: model["ref_count"] for model in models}

    deadline = time.monotonic() + 15
    while any(leases().values()):
        assert time.monotonic() < deadline, f"leases still held: {leases()}"
        time.sleep(0.1)
    assert set(leases()) >= {"en_US-joe-medium"}
