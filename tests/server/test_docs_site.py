"""The documentation site builds with `mkdocs build --strict`, API reference included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from speaches.main import create_app
from tests.helpers import REPO_ROOT


def test_site_builds_strictly_with_every_route_in_the_api_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"

    schema = create_app().openapi()
    reference = (site / "api" / "index.html").read_text()
    for path, operations in schema["paths"].items():
        for method in operations:
            assert f"{method.upper()} {path}" in reference, f"{method.upper()} {path} is missing from the API reference"
    published = (site / "openapi.json").read_text()
    assert sorted(schema["paths"]) == sorted(__import__("json").loads(published)["paths"])
    for page in ("installation", "configuration", "models", "usage/live", "benchmarks"):
        assert (site / page / "index.html").is_file(), page
