"""Realtime conversation items: their order, bounds, truncation by heard audio, and their chat messages."""

from __future__ import annotations

from typing import Any

from speaches.chat.conversation import Conversation, chat_messages, chat_tool_choice, chat_tools


def user_text(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def test_items_go_where_they_are_asked_to() -> None:
    conversation = Conversation()
    assert conversation.add(user_text("a", "one")) is None
    assert conversation.add(user_text("c", "three")) == "a"
    assert conversation.add(user_text("b", "two"), after="a") == "a"
    assert conversation.add(user_text("z", "zero"), after="root") is None
    assert [item["id"] for item in conversation.items()] == ["z", "a", "b", "c"]
    assert conversation.delete("b")
    assert not conversation.delete("b")
    assert conversation.last_id == "c"


def test_the_oldest_items_go_first_past_the_bounds() -> None:
    conversation = Conversation(max_items=3, max_characters=1000)
    for number in range(5):
        conversation.add(user_text(f"i{number}", "x"))
    assert [item["id"] for item in conversation.items()] == ["i2", "i3", "i4"]
    conversation.add(user_text("long", "y" * 999))
    assert [item["id"] for item in conversation.items()] == ["i4", "long"]


def test_chat_messages_of_every_kind_of_item() -> None:
    items = [
        user_text("u1", "What is the weather?"),
        {
            "id": "u2",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": "In Paris."}],
        },
        {"id": "c1", "type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"id": "c2", "type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
        {"id": "o1", "type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"id": "o2", "type": "function_call_output", "call_id": "call_2", "output": "noon"},
        {
            "id": "a1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": "Sunny at noon."}],
        },
        {
            "id": "c3",
            "type": "function_call",
            "call_id": "call_3",
            "name": "weather",
            "arguments": "{}",
        },  # never answered
        {
            "id": "s1",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": ""}],
        },  # silence
        {
            "id": "u3",
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "And this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA"},
            ],
        },
    ]
    assert chat_messages(items, "Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather?"},
        {"role": "user", "content": "In Paris."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        {"role": "assistant", "content": "Sunny at noon."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
            ],
        },
    ]
    assert chat_messages([], None) == []


def test_truncation_keeps_the_words_that_were_heard() -> None:
    conversation = Conversation()
    answer = {
        "id": "a",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": ""}],
    }
    conversation.add(answer)
    entry = conversation.entry("a")
    assert entry is not None
    entry.spoken = [("One two three four.", 2000.0), (" Five six seven eight.", 2000.0)]
    answer["content"][0]["transcript"] = "One two three four. Five six seven eight."
    assert conversation.audio_ms("a") == 4000
    conversation.truncate("a", 3000)
    assert answer["content"][0]["transcript"] == "One two three four. Five six"
    conversation.truncate("a", 0)
    assert answer["content"][0]["transcript"] == ""


def test_tools_and_tool_choice_in_chat_form() -> None:
    tools = [{"type": "function", "name": "weather", "description": "The weather.", "parameters": {"type": "object"}}]
    assert chat_tools(tools) == [
        {
            "type": "function",
            "function": {"name": "weather", "description": "The weather.", "parameters": {"type": "object"}},
        }
    ]
    assert chat_tool_choice("auto") == "auto"
    assert chat_tool_choice({"type": "function", "name": "weather"}) == {
        "type": "function",
        "function": {"name": "weather"},
    }
