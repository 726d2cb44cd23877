"""docs/configuration.md is generated from the Settings class; these keep the two in step."""

from __future__ import annotations

import pytest

from speaches.config import Settings
from speaches.config_docs import REGENERATE_COMMAND, render_configuration_markdown, setting_env_names
from tests.helpers import REPO_ROOT

CONFIGURATION_PAGE = REPO_ROOT / "docs" / "configuration.md"


def test_configuration_page_is_generated_from_the_settings() -> None:
    committed = CONFIGURATION_PAGE.read_text()
    assert committed == render_configuration_markdown(), (
        f"docs/configuration.md is out of date with speaches.config.Settings; regenerate it: {REGENERATE_COMMAND}"
    )


def test_page_does_not_depend_on_the_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    # Defaults computed from the home folder must render the same for every developer and CI.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WHISPER__MODEL", "someone/else")
    assert render_configuration_markdown() == CONFIGURATION_PAGE.read_text()


@pytest.mark.parametrize(
    ("env_name", "value", "read_back"),
    [
        ("UVICORN_PORT", "9123", lambda s: s.uvicorn_port == 9123),
        ("WHISPER__COMPUTE_TYPE", "int8_float16", lambda s: s.whisper.compute_type == "int8_float16"),
        ("WHISPER__BATCH_SIZE", "3", lambda s: s.whisper.batch_size == 3),
        ("PRELOAD_MODELS", "a/b,c/d", lambda s: s.preload_models == ["a/b", "c/d"]),
        (
            "TTS_VOICE_ALIASES",
            '{"nova": "en_US-amy-medium"}',
            lambda s: s.tts_voice_aliases["nova"] == "en_US-amy-medium",
        ),
    ],
)
def test_documented_names_are_the_ones_settings_read(
    monkeypatch: pytest.MonkeyPatch, env_name: str, value: str, read_back: object
) -> None:
    assert env_name in setting_env_names()
    assert f"| `{env_name}` |" in CONFIGURATION_PAGE.read_text()
    monkeypatch.setenv(env_name, value)
    assert callable(read_back)
    assert read_back(Settings(_env_file=None))


def test_every_field_is_documented_once() -> None:
    page = CONFIGURATION_PAGE.read_text()
    names = setting_env_names()
    assert len(names) == len(Settings.model_fields) - 1 + len(Settings.model_fields["whisper"].annotation.model_fields)
    for name in names:
        assert page.count(f"| `{name}` |") == 1, name
