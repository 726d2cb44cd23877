"""What every voice conversation shares: the LLM client and the conversation memory."""

from __future__ import annotations

from speaches.chat.llm import LlmClient
from speaches.chat.memory import ConversationMemory
from speaches.config import Settings


class ChatBackend:
    def __init__(self, settings: Settings) -> None:
        self.llm = LlmClient(settings)
        self.memory = ConversationMemory()

    async def aclose(self) -> None:
        await self.llm.aclose()
