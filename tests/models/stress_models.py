"""The models both stress tests share: the real tiny.en and bundled voice under two ids each, and a corrupt
whisper model, in a MODELS_DIR of their own."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.fake_hub import bundled_joe_voice, bundled_tiny_en_folder
from tests.helpers import AUDIO_DIR, TINY_EN

LAMP = AUDIO_DIR / "turn_on_the_living_room_lamp.wav"
DEADLOCK_BOUND_SECONDS = 120.0

STT_IDS = [TINY_EN, "copies/tiny-en"]
TTS_IDS = ["en_US-second-medium", "en_US-third-medium"]
BROKEN_ID = "broken/whisper"


def link_or_copy(source: Path, target: Path) -> None:
    # Not a symlink: MODELS_DIR refuses links that lead outside it.
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


def fill_models_dir(folder: Path) -> Path:
    """Two ids per real model (hard-linked files) and one whisper model whose model.bin is garbage."""
    (folder / "copies" / "tiny-en").mkdir(parents=True)
    for file in bundled_tiny_en_folder().iterdir():
        link_or_copy(file, folder / "copies" / "tiny-en" / file.name)
    voice = bundled_joe_voice()
    for name in ("en_US-second-medium", "en_US-third-medium"):
        link_or_copy(voice, folder / f"{name}.onnx")
        link_or_copy(voice.with_name(voice.name + ".json"), folder / f"{name}.onnx.json")
    broken = folder / "broken" / "whisper"
    broken.mkdir(parents=True)
    shutil.copy(bundled_tiny_en_folder() / "config.json", broken / "config.json")
    (broken / "model.bin").write_bytes(b"this is not a CTranslate2 model" * 100)
    return folder
