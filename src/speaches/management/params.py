"""Path parameters the management routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from speaches.models.catalog import MODEL_ID_PATTERN

ModelIdPath = Annotated[
    str,
    Path(
        pattern=MODEL_ID_PATTERN,
        description=(
            "A model id: a Hugging Face repo id (`Systran/faster-whisper-base`), a folder under MODELS_DIR, "
            "a piper voice (`en_US-joe-medium`) or an alias (`whisper-1`, `tts-1`)."
        ),
        examples=["Systran/faster-whisper-tiny.en"],
    ),
]
