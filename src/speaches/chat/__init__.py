"""Voice conversations: chat completions that hear and speak, the thinking done by an OpenAI-compatible LLM."""
