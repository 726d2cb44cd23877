"""A Realtime conversation: its items in order, and the same conversation as chat messages for a text LLM.

Items keep the Realtime API's shapes (`message` with `input_text`/`input_audio`/`output_text`/`output_audio`
parts, `function_call`, `function_call_output`), as the client sees them. For the LLM they become OpenAI
chat messages: audio is represented by its transcript, function calls by an assistant message's
`tool_calls` (consecutive calls in one message, as a chat model emits them), outputs by `tool` messages.

Bounded: at most `MAX_ITEMS` items and `MAX_CHARACTERS` characters of text; past either, the oldest items
go first (OpenAI's `truncation: auto` does the same when a conversation outgrows the model's context).
A spoken answer remembers how many milliseconds of audio each piece of its transcript took, so that
`truncate(item, audio_end_ms)` (the client stopped playing there) keeps only the words that were heard.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_ITEMS = 2000
MAX_CHARACTERS = 400_000

_TEXT_FIELDS = ("text", "transcript", "output", "arguments")


@dataclass
class Entry:
    item: dict[str, Any]
    spoken: list[tuple[str, float]] = field(default_factory=list)
    """(transcript piece, milliseconds of audio) of a spoken answer, in order."""

    @property
    def characters(self) -> int:
        total = sum(len(str(self.item.get(name) or "")) for name in ("output", "arguments"))
        for part in self.item.get("content") or ():
            total += sum(len(str(part.get(name) or "")) for name in _TEXT_FIELDS if isinstance(part, dict))
        return total


class ConversationFullError(Exception):
    pass


class Conversation:
    def __init__(self, *, max_items: int = MAX_ITEMS, max_characters: int = MAX_CHARACTERS) -> None:
        self.max_items = max_items
        self.max_characters = max_characters
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def last_id(self) -> str | None:
        return next(reversed(self._entries), None)

    def add(self, item: dict[str, Any], *, after: str | None = None) -> str | None:
        """Add `item` after the item `after` (`"root"`: first; None: last). Returns the id of the item before it."""
        item_id = item["id"]
        if after is None or after == self.last_id:
            previous = self.last_id
            self._entries[item_id] = Entry(item)
        else:
            order = list(self._entries.items())
            position = 0 if after == "root" else [key for key, _ in order].index(after) + 1
            previous = None if position == 0 else order[position - 1][0]
            order.insert(position, (item_id, Entry(item)))
            self._entries = OrderedDict(order)
        self._bound()
        return previous

    def get(self, item_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(item_id)
        return None if entry is None else entry.item

    def entry(self, item_id: str) -> Entry | None:
        return self._entries.get(item_id)

    def delete(self, item_id: str) -> bool:
        return self._entries.pop(item_id, None) is not None

    def update(self, item: dict[str, Any]) -> None:
        """Replace a known item (its text grew, its status changed); an item dropped meanwhile stays dropped."""
        entry = self._entries.get(item["id"])
        if entry is not None:
            entry.item = item
            self._bound()

    def truncate(self, item_id: str, audio_end_ms: float) -> None:
        """Keep only the words of a spoken answer that were heard before `audio_end_ms`."""
        entry = self._entries[item_id]
        heard: list[str] = []
        elapsed = 0.0
        for piece, milliseconds in entry.spoken:
            if elapsed + milliseconds <= audio_end_ms:
                heard.append(piece)
            elif audio_end_ms > elapsed and milliseconds > 0:
                words = piece.split()
                kept = round(len(words) * (audio_end_ms - elapsed) / milliseconds)
                leading = piece[: len(piece) - len(piece.lstrip())]
                heard.append(leading + " ".join(words[:kept]))
                break
            else:
                break
            elapsed += milliseconds
        transcript = "".join(heard).strip()
        for part in entry.item.get("content") or ():
            if part.get("type") == "output_audio":
                part["transcript"] = transcript
        entry.spoken = [(transcript, audio_end_ms)]

    def audio_ms(self, item_id: str) -> float:
        entry = self._entries.get(item_id)
        return sum(milliseconds for _, milliseconds in entry.spoken) if entry else 0.0

    def items(self) -> list[dict[str, Any]]:
        return [entry.item for entry in self._entries.values()]

    def _bound(self) -> None:
        characters = sum(entry.characters for entry in self._entries.values())
        while len(self._entries) > 1 and (len(self._entries) > self.max_items or characters > self.max_characters):
            _, dropped = self._entries.popitem(last=False)
            characters -= dropped.characters


def chat_messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    """The conversation as OpenAI chat messages, the session's instructions first as the system message."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    calls_answered = {item.get("call_id") for item in items if item.get("type") == "function_call_output"}
    for item in items:
        kind = item.get("type")
        if kind == "message":
            message = _message(item)
            if message is not None:
                messages.append(message)
        elif kind == "function_call":
            if item.get("call_id") not in calls_answered:
                continue  # chat models refuse a call without its output after it
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name", ""), "arguments": item.get("arguments") or "{}"},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output", "")})
    return messages


def _message(item: dict[str, Any]) -> dict[str, Any] | None:
    role = item.get("role")
    parts: list[dict[str, Any]] = []
    for part in item.get("content") or ():
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
        elif kind in ("input_audio", "output_audio", "audio"):
            text = part.get("transcript")
        elif kind == "input_image" and part.get("image_url"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
            continue
        else:
            continue
        if text:
            parts.append({"type": "text", "text": text})
    if not parts:
        return None  # a turn with nothing said in it (silence, a cancelled answer before its first word)
    if all(part["type"] == "text" for part in parts):
        return {"role": role, "content": " ".join(part["text"] for part in parts)}
    return {"role": role, "content": parts}


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Realtime function tools (`{type, name, description, parameters}`) as chat completion tools."""
    converted = []
    for tool in tools:
        function = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        if tool.get("parameters") is not None:
            function["parameters"] = tool["parameters"]
        converted.append({"type": "function", "function": function})
    return converted


def chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """`auto`/`none`/`required` as they are; `{type: function, name}` as chat's `{type, function: {name}}`."""
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice
