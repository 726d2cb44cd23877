"""A conversation as the client sent it -> the same conversation in words only, for a text LLM.

Two things change, nothing else: each `input_audio` content part becomes a text part holding its
transcript (a message left with only text parts gets them joined into one string, the form every
OpenAI-compatible server reads), and an assistant message that refers to an earlier spoken answer
by `audio.id` gets that answer's words as its `content`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from speaches.chat.backend import ChatBackend
from speaches.chat.voice import transcribe
from speaches.errors import InvalidRequestError, shorten
from speaches.state import AppState

logger = logging.getLogger(__name__)


async def in_words(state: AppState, backend: ChatBackend, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [await _message_in_words(state, backend, message, index) for index, message in enumerate(messages)]


async def _message_in_words(
    state: AppState, backend: ChatBackend, message: dict[str, Any], index: int
) -> dict[str, Any]:
    if message.get("role") == "assistant" and "audio" in message:
        message = _with_spoken_words(backend, message, index)
    content = message.get("content")
    if not isinstance(content, list) or not any(_is_audio_part(part) for part in content):
        return message
    parts = [
        await _part_in_words(state, backend, part, f"messages[{index}].content[{number}]")
        if _is_audio_part(part)
        else part
        for number, part in enumerate(content)
    ]
    if all(isinstance(part, dict) and part.get("type") == "text" for part in parts):
        return {**message, "content": "\n".join(str(part.get("text", "")) for part in parts)}
    return {**message, "content": parts}


def _is_audio_part(part: object) -> bool:
    return isinstance(part, dict) and part.get("type") == "input_audio"


def _with_spoken_words(backend: ChatBackend, message: dict[str, Any], index: int) -> dict[str, Any]:
    """The assistant message without `audio`; its `content` the words of the answer `audio.id` names."""
    reference = message["audio"]
    rest = {key: value for key, value in message.items() if key != "audio"}
    if reference is None or rest.get("content"):
        return rest  # the words are there already
    audio_id = reference.get("id") if isinstance(reference, dict) else None
    if not isinstance(audio_id, str):
        raise InvalidRequestError(
            f"messages[{index}].audio must be an object with the 'id' of an earlier spoken answer.",
            param=f"messages[{index}].audio.id",
        )
    transcript = backend.memory.answer_transcript(audio_id)
    if transcript is None:
        raise InvalidRequestError(
            f"messages[{index}].audio.id '{shorten(audio_id)}' is not an answer this server spoke in the last hour "
            "(or the server has restarted since): send that answer's words as the message's 'content' instead.",
            param=f"messages[{index}].audio.id",
            code="audio_not_found",
        )
    return {**rest, "content": transcript}


async def _part_in_words(state: AppState, backend: ChatBackend, part: dict[str, Any], where: str) -> dict[str, Any]:
    input_audio = part.get("input_audio")
    data = input_audio.get("data") if isinstance(input_audio, dict) else None
    if not isinstance(data, str) or not data:
        raise InvalidRequestError(
            f"{where} is an input_audio part without 'input_audio.data' (base64 audio).",
            param=f"{where}.input_audio.data",
        )
    transcript = backend.memory.heard_transcript(data)
    if transcript is None:
        try:
            audio = base64.b64decode(_bare_base64(data), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(
                f"{where}.input_audio.data is not valid base64.", param=f"{where}.input_audio.data"
            ) from None
        ref = state.catalog.stt(state.settings.chat_completion_transcription_model)
        try:
            transcript = await transcribe(state, ref, audio)
        except InvalidRequestError as error:
            if error.param != "file":
                raise
            message = f"{where}.input_audio: {error.message}"
            raise InvalidRequestError(message, param=f"{where}.input_audio.data") from None
        logger.info("%s: heard %d characters", where, len(transcript))
        backend.memory.remember_heard(data, transcript)
    return {"type": "text", "text": transcript}


def _bare_base64(data: str) -> str:
    """The base64 itself: a `data:audio/wav;base64,` prefix and line breaks (MIME wraps at 76) taken off."""
    if data.startswith("data:") and ";base64," in data[:200]:
        data = data.split(";base64,", 1)[1]
    return "".join(data.split())
