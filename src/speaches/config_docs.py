"""Render docs/configuration.md from the Settings class, so the page cannot drift from the code.

Regenerate the page after changing a setting:

    uv run python -m speaches.config_docs > docs/configuration.md

`tests/server/test_config_docs.py` fails while the committed page differs from what this prints.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from speaches.config import Settings

REGENERATE_COMMAND = "uv run python -m speaches.config_docs > docs/configuration.md"

# Variables that huggingface_hub reads itself; they are not fields of Settings but decide where
# models are cached and whether they may be downloaded, so the page lists them too.
HUGGING_FACE_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("HF_HOME", "`~/.cache/huggingface`", "Root of the Hugging Face cache; downloaded models go to `HF_HOME/hub`."),
    (
        "HF_HUB_CACHE",
        "`HF_HOME/hub`",
        "The model cache itself, when it should live somewhere other than under `HF_HOME`.",
    ),
    (
        "HF_HUB_OFFLINE",
        "`0`",
        "`1` never contacts the Hub: models must be local, cached or bundled, and a missing one is a 404.",
    ),
    ("HF_TOKEN", "unset", "Access token for private or gated repositories."),
)


@dataclass(frozen=True)
class SettingRow:
    env_name: str
    type_text: str
    default_text: str
    description: str


@dataclass(frozen=True)
class SettingTable:
    """The plain fields of one settings model; a nested model gets a table of its own."""

    env_prefix: str
    model: type[BaseModel]
    rows: list[SettingRow]


def setting_tables(model: type[BaseModel], env_prefix: str, delimiter: str) -> list[SettingTable]:
    """The model's own table first, then one per nested model (depth first), fields in declaration order."""
    rows: list[SettingRow] = []
    nested: list[SettingTable] = []
    for name, field in model.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else name
        env_name = env_prefix + alias.upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested += setting_tables(annotation, env_name + delimiter, delimiter)
            continue
        rows.append(
            SettingRow(
                env_name=env_name,
                type_text=describe_type(annotation, field.metadata),
                default_text=describe_default(field),
                description=field.description or "",
            )
        )
    return [SettingTable(env_prefix, model, rows), *nested]


def setting_env_names(settings_class: type[BaseSettings] = Settings) -> set[str]:
    """Every environment variable the settings class reads (for checks elsewhere, e.g. compose.yaml)."""
    delimiter = _nested_delimiter(settings_class)
    tables = setting_tables(settings_class, _env_prefix(settings_class), delimiter)
    return {row.env_name for table in tables for row in table.rows}


def _env_prefix(settings_class: type[BaseSettings]) -> str:
    return str(settings_class.model_config.get("env_prefix") or "").upper()


def _nested_delimiter(settings_class: type[BaseSettings]) -> str:
    return str(settings_class.model_config.get("env_nested_delimiter") or "__")


def describe_type(annotation: Any, metadata: list[Any]) -> str:
    """A reader's name for a field's type, with its bounds (`integer ≥ 1`)."""
    text, optional = _type_words(annotation)
    bounds = [_bound_text(item) for item in metadata]
    bounds_text = ", ".join(bound for bound in bounds if bound)
    if bounds_text:
        text = f"{text} {bounds_text}"
    return f"{text} (optional)" if optional else text


def _type_words(annotation: Any) -> tuple[str, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        optional = len(members) < len(get_args(annotation))
        words = " or ".join(_type_words(member)[0] for member in members)
        return words, optional
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation)), False
    if origin is list:
        (item,) = get_args(annotation)
        return f"list of {_type_words(item)[0]}s", False
    if origin is dict:
        key, value = get_args(annotation)
        return f"JSON object ({_type_words(key)[0]} → {_type_words(value)[0]})", False
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{member.value}`" for member in annotation), False
    simple_names: dict[Any, str] = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
        SecretStr: "secret string",
    }
    if annotation in simple_names:
        return simple_names[annotation], False
    return getattr(annotation, "__name__", str(annotation)), False


def _bound_text(item: Any) -> str:
    for bound_type, attribute, symbol in (
        (annotated_types.Ge, "ge", "≥"),
        (annotated_types.Gt, "gt", ">"),
        (annotated_types.Le, "le", "≤"),
        (annotated_types.Lt, "lt", "<"),
    ):
        if isinstance(item, bound_type):
            return f"{symbol} {getattr(item, attribute):g}"
    return ""


def describe_default(field: FieldInfo) -> str:
    """The default as a reader would type it; machine-specific paths are shown relative to `~`."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return _value_text(value)


def _value_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, Path):
        return f"`{_home_relative(value)}`"
    if isinstance(value, list | tuple | dict | set):
        if not value:
            return "empty"
        return f"`{json.dumps(value if not isinstance(value, set) else sorted(value))}`"
    if isinstance(value, SecretStr):
        return "set" if value.get_secret_value() else "unset"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _home_relative(path: Path) -> str:
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except ValueError:
        return path.as_posix()


def _cell(text: str) -> str:
    """Table cells may hold neither a pipe nor a line break."""
    return " ".join(text.split()).replace("|", "\\|")


def _table(rows: list[SettingRow]) -> list[str]:
    lines = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    lines.extend(
        f"| `{row.env_name}` | {_cell(row.type_text)} | {_cell(row.default_text)} | {_cell(row.description)} |"
        for row in rows
    )
    return lines


def _docstring_paragraph(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def render_configuration_markdown(settings_class: type[BaseSettings] = Settings) -> str:
    """The whole docs/configuration.md page."""
    delimiter = _nested_delimiter(settings_class)
    env_file = settings_class.model_config.get("env_file")
    main_table, *group_tables = setting_tables(settings_class, _env_prefix(settings_class), delimiter)
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from speaches.config.Settings; do not edit by hand. Regenerate with:",
        f"     {REGENERATE_COMMAND} -->",
        "",
        "Every setting is an environment variable. Names are not case sensitive"
        + (f", and a `{env_file}` file in the working directory is read too" if env_file else "")
        + " (real environment variables win over it).",
        f"Settings of a group are named with the group's prefix and `{delimiter}`, for example "
        f"`WHISPER{delimiter}COMPUTE_TYPE=int8`.",
        'Lists take either comma-separated values (`a,b`) or a JSON list (`["a","b"]`).',
        "",
        "## Server",
        "",
        _docstring_paragraph(settings_class),
        "",
        *_table(main_table.rows),
    ]
    for table in group_tables:
        lines += ["", f"## `{table.env_prefix}*`", "", _docstring_paragraph(table.model), "", *_table(table.rows)]
    lines += [
        "",
        "## Hugging Face Hub",
        "",
        "These are read by `huggingface_hub` itself, not by the settings class above.",
        "",
        "| Variable | Default | Description |",
        "| --- | --- | --- |",
        *(f"| `{name}` | {default} | {_cell(text)} |" for name, default, text in HUGGING_FACE_VARIABLES),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(render_configuration_markdown())


if __name__ == "__main__":
    main()
