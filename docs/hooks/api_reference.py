"""MkDocs hook: render the app's OpenAPI schema into the API reference page at build time.

The schema comes from `speaches.main:create_app().openapi()` in the build's own environment, so the
page always shows the routes the code has, and the build needs no network and no JavaScript. The
hook also publishes the schema itself as `openapi.json` beside the page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

API_PAGE = "api.md"
MARKER = "<!-- api-reference -->"
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")

_rendered: dict[str, str] = {}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    schema, websockets = load_app_description()
    _rendered["markdown"] = render_reference(schema, websockets)
    files.append(File.generated(config, "openapi.json", content=json.dumps(schema, indent=2) + "\n"))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri != API_PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{API_PAGE} must contain the line {MARKER!r} where the reference goes")
    return markdown.replace(MARKER, _rendered["markdown"])


def load_app_description() -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The OpenAPI schema, and the WebSocket routes (OpenAPI has no way to describe them)."""
    from starlette.routing import WebSocketRoute

    from speaches.main import create_app

    app = create_app()
    websockets = [
        (route.path, _doc_paragraph(route.endpoint.__doc__))
        for route in app.routes
        if isinstance(route, WebSocketRoute)
    ]
    return app.openapi(), websockets


# --- rendering ---


def render_reference(schema: dict[str, Any], websockets: list[tuple[str, str]]) -> str:
    lines: list[str] = []
    operations = list(_operations(schema))
    if not operations:
        lines += ["The application has no HTTP routes yet.", ""]
    for tag, tagged in _group_by_tag(schema, operations):
        lines += [f"## {tag}", ""]
        for method, path, operation in tagged:
            lines += _render_operation(method, path, operation, schema)
    if websockets:
        lines += ["## WebSocket", ""]
        for path, doc in websockets:
            lines += [f"### `WS {path}` {{#{_anchor('ws', path)}}}", ""]
            if doc:
                lines += [doc, ""]
    components = schema.get("components", {}).get("schemas", {})
    if components:
        lines += ["## Schemas", ""]
        for name in sorted(components, key=str.lower):
            lines += _render_component(name, components[name])
    return "\n".join(lines).rstrip() + "\n"


def _operations(schema: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for path, item in schema.get("paths", {}).items():
        for method in HTTP_METHODS:
            if method in item:
                yield method, path, item[method]


def _group_by_tag(
    schema: dict[str, Any], operations: list[tuple[str, str, dict[str, Any]]]
) -> list[tuple[str, list[tuple[str, str, dict[str, Any]]]]]:
    """Groups in the order the schema declares its tags, then in order of first use."""
    groups: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
        tag["name"]: [] for tag in schema.get("tags", []) if "name" in tag
    }
    for operation in operations:
        tags = operation[2].get("tags") or ["other"]
        groups.setdefault(tags[0], []).append(operation)
    return [(tag.capitalize() if tag.islower() else tag, ops) for tag, ops in groups.items() if ops]


def _render_operation(method: str, path: str, operation: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}` {{#{_anchor(method, path)}}}", ""]
    if operation.get("summary"):
        lines += [f"**{_inline(operation['summary'])}**", ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["Parameters:", "", "| Name | In | Type | Required | Description |", "| --- | --- | --- | --- | --- |"]
        lines += [
            f"| `{p['name']}` | {p.get('in', '')} | {_type_text(p.get('schema', {}))} | "
            f"{'yes' if p.get('required') else 'no'} | {_inline(p.get('description', ''))} |"
            for p in parameters
        ]
        lines.append("")
    body = operation.get("requestBody")
    if body:
        lines += _render_request_body(body, schema)
    responses = operation.get("responses", {})
    if responses:
        lines += ["Responses:", "", "| Status | Description | Content |", "| --- | --- | --- |"]
        for status, response in responses.items():
            content = ", ".join(
                f"`{media}`: {_type_text(media_type.get('schema', {}))}"
                for media, media_type in response.get("content", {}).items()
            )
            lines.append(f"| {status} | {_inline(response.get('description', ''))} | {content or '-'} |")
        lines.append("")
    return lines


def _render_request_body(body: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    required = " (required)" if body.get("required") else ""
    for media, media_type in body.get("content", {}).items():
        body_schema = media_type.get("schema", {})
        lines += [f"Request body{required}, `{media}`: {_type_text(body_schema)}", ""]
        resolved = _resolve(body_schema, schema)
        if resolved.get("properties"):
            lines += _properties_table(resolved)
    return lines


def _render_component(name: str, component: dict[str, Any]) -> list[str]:
    lines = [f"### {name} {{#{_schema_anchor(name)}}}", ""]
    if component.get("description"):
        lines += [_doc_paragraph(component["description"]), ""]
    if component.get("properties"):
        lines += _properties_table(component)
    else:
        lines += [f"Type: {_type_text(component)}", ""]
    return lines


def _properties_table(model: dict[str, Any]) -> list[str]:
    required = set(model.get("required", []))
    lines = ["| Field | Type | Required | Default | Description |", "| --- | --- | --- | --- | --- |"]
    for field, field_schema in model["properties"].items():
        default = f"`{json.dumps(field_schema['default'])}`" if "default" in field_schema else "-"
        lines.append(
            f"| `{field}` | {_type_text(field_schema)} | {'yes' if field in required else 'no'} | "
            f"{_inline(default)} | {_inline(field_schema.get('description', ''))} |"
        )
    lines.append("")
    return lines


def _type_text(node: dict[str, Any]) -> str:
    """A short, linked description of a JSON schema: `string`, `array of [Segment](#schema-Segment)`."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_schema_anchor(name)})"
    for combiner in ("anyOf", "oneOf"):
        if combiner in node:
            return " or ".join(dict.fromkeys(_type_text(option) for option in node[combiner]))
    if "allOf" in node:
        return " and ".join(_type_text(part) for part in node["allOf"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(value)}`" for value in node["enum"])
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(_type_text({**node, "type": one}) for one in kind)
    if kind == "array":
        return f"array of {_type_text(node.get('items', {}))}"
    if kind == "object":
        extra = node.get("additionalProperties")
        return f"object (string → {_type_text(extra)})" if isinstance(extra, dict) and extra else "object"
    if kind == "string" and node.get("format") == "binary":
        return "file"
    if kind == "string" and node.get("contentMediaType") == "application/octet-stream":
        return "file"
    if kind:
        return f"{kind} ({node['format']})" if node.get("format") else str(kind)
    return "any"


def _resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    resolved: dict[str, Any] = schema.get("components", {}).get("schemas", {}).get(name, {})
    return resolved


def _anchor(method: str, path: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", f"{method}-{path}".lower())).strip("-")


def _schema_anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _inline(text: str) -> str:
    """Table cells may hold neither a pipe nor a line break."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _doc_paragraph(text: str | None) -> str:
    return " ".join((text or "").split())
