"""Static checks on docker-compose.yml: no Docker engine here, so the file's shape is the test."""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from pydantic import ValidationError

from paytide.production_rules import DEV_SANDBOX_API_KEY, DEV_SANDBOX_WEBHOOK_SECRET
from paytide.search_attributes import cli_declarations
from paytide.settings import ENV_PREFIX, Settings, _describe

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
GENERATOR = ROOT / "deploy" / "generate-secrets.sh"

# The topology the docs describe; the operations runbook names these services.
DOCUMENTED_SERVICES = frozenset(
    {
        "postgres",
        "temporal",
        "temporal-ui",
        "paytide-api",
        "paytide-worker",
        "paytide-migrate",
        "sandbox",
    }
)

# Each paytide service and the `paytide` sub-command it runs.
APP_COMMANDS = {
    "paytide-api": ["api"],
    "paytide-worker": ["worker"],
    "paytide-migrate": ["db", "upgrade"],
    "sandbox": ["sandbox"],
}

# What the workflows upsert, as NAME=TYPE pairs in the `temporal` CLI's spelling.
SEARCH_ATTRIBUTES = dict(pair.split("=", 1) for pair in cli_declarations())

# A value of the right shape for required variables whose format Settings checks.
REQUIRED_VALUES = {
    "PAYLOAD_KEYS": "compose-test:" + "A" * 43 + "=",
    "SEARCH_HASH_KEY": "compose-test-search-key",
}
# A setting holding a credential, by name (as _describe hides them).
_SECRET_SETTING = re.compile(r"SECRET|KEY|PASSWORD|TOKEN")
_PREFIXED_NAME = re.compile(rf"\b{ENV_PREFIX}[A-Z0-9_]+")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@functools.cache
def _compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@functools.cache
def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(_compose_text())
    assert isinstance(loaded, dict), "docker-compose.yml must be a mapping at the top level"
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of Compose's two spellings it uses."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (str(item).partition("=") for item in raw)
        return {name: value for name, _, value in pairs}
    return {str(name): "" if value is None else str(value) for name, value in raw.items()}


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency name to condition; the short list form means `service_started`."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def _published_ports(service: Mapping[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs from the short or the long `ports` syntax."""
    published: set[tuple[int, int]] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published.add((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) >= 2:
            published.add((int(parts[-2]), int(parts[-1])))
    return published


def _build_recipe(service: Mapping[str, Any]) -> tuple[str, str] | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return build, "Dockerfile"
    return build.get("context", "."), build.get("dockerfile", "Dockerfile")


def _interpolated(value: str, given: Mapping[str, str] = REQUIRED_VALUES) -> str:
    """The value Compose would pass, with required variables taken from ``given`` (else a
    placeholder)."""

    def substitute(match: re.Match[str]) -> str:
        op, arg = match.group("op"), match.group("arg")
        if op is not None and op.endswith("-"):
            return arg
        return given.get(match.group("name"), "placeholder")

    return _INTERPOLATION.sub(substitute, value).replace("$$", "$")


def _load(service: Mapping[str, Any], given: Mapping[str, str] = REQUIRED_VALUES) -> Settings:
    """Settings as the container builds them: from its environment variables only."""
    env = {
        variable: _interpolated(value, given)
        for variable, value in _environment(service).items()
        if variable.startswith(ENV_PREFIX)
    }
    with mock.patch.dict(os.environ, env):
        return Settings(_env_file=None)  # type: ignore[call-arg]


def _settings_problems(
    services: Mapping[str, Any], given: Mapping[str, str] = REQUIRED_VALUES
) -> dict[str, str]:
    """Each paytide service whose environment Settings refuses, with paytide's message. Run
    without any PAYTIDE_ variable of the machine (the caller's job)."""
    problems: dict[str, str] = {}
    for name in APP_COMMANDS:
        try:
            _load(services[name], given)
        except ValidationError as error:
            problems[name] = _describe(error)
    return problems


def _defaulted_secrets(services: Mapping[str, Any]) -> list[str]:
    """service.VARIABLE for every credential setting whose value is not a required
    `${NAME:?message}`: a literal, or a `${NAME:-default}` that ships a default."""
    found = []
    for name, service in services.items():
        for variable, value in _environment(service).items():
            if not variable.startswith(ENV_PREFIX) or not _SECRET_SETTING.search(variable):
                continue
            if variable == f"{ENV_PREFIX}SANDBOX_WEBHOOK_URL":
                continue
            required = _INTERPOLATION.fullmatch(value)
            if required is None or required.group("op") not in (":?", "?"):
                found.append(f"{name}.{variable}")
    return found


def _config_bodies(service: Mapping[str, Any]) -> Iterator[str]:
    configs = _compose().get("configs") or {}
    for entry in service.get("configs") or []:
        source = entry["source"] if isinstance(entry, dict) else entry
        yield str(configs[source].get("content", ""))


def test_compose_file_parses() -> None:
    """docker-compose.yml is valid YAML with a non-empty `services` mapping."""
    assert _services()


def test_documented_services_exist() -> None:
    """Every service the docs name is defined in the compose file."""
    missing = DOCUMENTED_SERVICES - _services().keys()
    assert not missing, f"services named in the docs but missing from compose: {sorted(missing)}"


def test_every_paytide_variable_is_a_setting() -> None:
    """Each PAYTIDE_ name anywhere in the compose file is a field of Settings."""
    known = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    used = set(_PREFIXED_NAME.findall(_compose_text()))
    for service in _services().values():
        used.update(name for name in _environment(service) if name.startswith(ENV_PREFIX))
    assert used, "the compose file configures no paytide settings at all"
    unknown = used - known
    assert not unknown, f"not fields of paytide.settings.Settings: {sorted(unknown)}"


@pytest.fixture
def no_machine_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the compose file may speak: no stray variables from the machine running the tests."""
    for variable in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(variable)


@pytest.mark.usefixtures("no_machine_settings")
def test_app_environments_are_valid_settings() -> None:
    """Each paytide service's environment loads into Settings, production's checks included."""
    assert _settings_problems(_services()) == {}
    for name in APP_COMMANDS:
        settings = _load(_services()[name])
        # The sandbox is a test card processor: it runs as development and holds no payload keys.
        expected = "development" if name == "sandbox" else "production"
        assert settings.environment == expected, name
        # The stack shows the sandbox enabled in production, explicitly.
        assert settings.sandbox_on, name


def test_no_secret_has_a_default_in_compose() -> None:
    """Every credential a paytide service gets is a required ${NAME:?message}: none ships a
    default (such as the sandbox's public development secrets)."""
    assert _defaulted_secrets(_services()) == []


def test_sandbox_and_api_share_the_sandbox_secrets() -> None:
    """The sandbox signs with, and the API verifies with, the same required variables."""
    services = _services()
    for variable in ("SANDBOX_API_KEY", "SANDBOX_WEBHOOK_SECRET"):
        values = {
            _environment(services[name])[f"{ENV_PREFIX}{variable}"]
            for name in ("sandbox", "paytide-api", "paytide-worker")
        }
        assert len(values) == 1, values


@pytest.mark.usefixtures("no_machine_settings")
def test_the_checks_catch_a_dev_default_or_a_missing_secret() -> None:
    """A compose file with the sandbox's public dev secret as default, or without the codec
    token, fails the checks above, naming the variable."""
    defaulted = copy.deepcopy(_services())
    for name in ("sandbox", "paytide-api", "paytide-worker", "paytide-migrate"):
        env = defaulted[name]["environment"]
        env[f"{ENV_PREFIX}SANDBOX_WEBHOOK_SECRET"] = (
            "${SANDBOX_WEBHOOK_SECRET:-" + DEV_SANDBOX_WEBHOOK_SECRET + "}"
        )
        env[f"{ENV_PREFIX}SANDBOX_API_KEY"] = DEV_SANDBOX_API_KEY
    assert "paytide-api.PAYTIDE_SANDBOX_WEBHOOK_SECRET" in _defaulted_secrets(defaulted)
    assert "sandbox.PAYTIDE_SANDBOX_API_KEY" in _defaulted_secrets(defaulted)
    refused = _settings_problems(defaulted)
    assert set(refused) == {"paytide-api", "paytide-worker", "paytide-migrate"}
    assert (
        "PAYTIDE_SANDBOX_WEBHOOK_SECRET: still the public development value"
        in (refused["paytide-api"])
    )
    assert "PAYTIDE_SANDBOX_API_KEY: still the public development value" in refused["paytide-api"]

    missing = copy.deepcopy(_services())
    for name in APP_COMMANDS:
        missing[name]["environment"].pop(f"{ENV_PREFIX}CODEC_AUTH_TOKEN", None)
    assert (
        "PAYTIDE_CODEC_AUTH_TOKEN: required in production"
        in (_settings_problems(missing)["paytide-api"])
    )


@pytest.mark.usefixtures("no_machine_settings")
def test_generated_secrets_satisfy_production(tmp_path: Path) -> None:
    """deploy/generate-secrets.sh writes every variable compose requires, with values production
    accepts, as a 0600 file; a second run keeps the first file's secrets."""
    target = tmp_path / ".env"
    subprocess.run(["sh", str(GENERATOR), str(target)], check=True, capture_output=True)
    assert target.stat().st_mode & 0o777 == 0o600
    first = target.read_text()
    generated = dict(
        line.split("=", 1) for line in first.splitlines() if line and not line.startswith("#")
    )
    yaml_lines = [ln for ln in _compose_text().splitlines() if not ln.lstrip().startswith("#")]
    required = {
        match.group("name")
        for match in _INTERPOLATION.finditer("\n".join(yaml_lines))
        if match.group("op") in (":?", "?")
    }
    assert required <= generated.keys(), required - generated.keys()
    assert _settings_problems(_services(), generated) == {}
    again = subprocess.run(["sh", str(GENERATOR), str(target)], capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert target.read_text() == first


def test_app_services_share_one_image() -> None:
    """API, worker, migrations and sandbox are built from the same Dockerfile and image name."""
    recipes = {name: _build_recipe(_services()[name]) for name in APP_COMMANDS}
    images = {name: _services()[name].get("image") for name in APP_COMMANDS}
    assert None not in recipes.values(), f"every app service needs `build`: {recipes}"
    assert len(set(recipes.values())) == 1, f"app services build differently: {recipes}"
    assert len(set(images.values())) == 1, f"app services name different images: {images}"
    recipe = recipes["paytide-api"]
    assert recipe is not None
    context, dockerfile = recipe
    assert (ROOT / context / dockerfile).is_file(), f"{dockerfile} not found in {context}"


def test_app_services_run_their_subcommand() -> None:
    """Each app service runs its own `paytide` sub-command (the image's entrypoint)."""
    commands = {name: _services()[name].get("command") for name in APP_COMMANDS}
    assert commands == APP_COMMANDS


def test_depends_on_targets_exist() -> None:
    """Every `depends_on` entry names a service defined in the same file."""
    services = _services()
    dangling = {
        (name, target)
        for name, service in services.items()
        for target in _depends_on(service)
        if target not in services
    }
    assert not dangling, f"depends_on points at undefined services: {sorted(dangling)}"


def test_waited_on_services_can_report_readiness() -> None:
    """A `service_healthy` target has a healthcheck; a completion target is a one-shot job."""
    services = _services()
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            dependency = services.get(target)
            if dependency is None:
                continue  # reported by test_depends_on_targets_exist
            if condition == "service_healthy":
                assert "healthcheck" in dependency, f"{name} waits for {target} to be healthy"
            if condition == "service_completed_successfully":
                assert dependency.get("restart", "no") in ("no", False), (
                    f"{name} waits for {target} to finish, but {target} restarts forever"
                )


def test_documented_ports_are_published() -> None:
    """The API answers on host port 8000 and the Temporal Web UI on host port 8233."""
    services = _services()
    assert (8000, 8000) in _published_ports(services["paytide-api"])
    assert (8233, 8080) in _published_ports(services["temporal-ui"])


def test_api_healthcheck_probes_readiness() -> None:
    """The API's container healthcheck asks /readyz, so dependants wait for a ready API."""
    test = _services()["paytide-api"]["healthcheck"]["test"]
    assert "/readyz" in " ".join(test)


def test_search_attributes_are_registered() -> None:
    """temporal-setup registers exactly paytide's custom search attributes, with their types."""
    setup = _services()["temporal-setup"]
    pairs = _environment(setup)["SEARCH_ATTRIBUTES"].split()
    registered = dict(pair.split("=", 1) for pair in pairs)
    assert registered == SEARCH_ATTRIBUTES
    assert len(registered) == len(pairs), "a search attribute is listed twice"
    script = "\n".join(_config_bodies(setup))
    assert "operator search-attribute create" in script
    assert "SEARCH_ATTRIBUTES" in script


def test_one_namespace_everywhere() -> None:
    """Workers, the setup job and the Web UI all use the namespace the setup job creates."""
    services = _services()
    created = _environment(services["temporal-setup"])["TEMPORAL_NAMESPACE"]
    assert _environment(services["temporal-ui"])["TEMPORAL_DEFAULT_NAMESPACE"] == created
    for name in ("paytide-api", "paytide-worker"):
        assert _environment(services[name])[f"{ENV_PREFIX}TEMPORAL_NAMESPACE"] == created, name
