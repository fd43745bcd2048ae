"""Settings: defaults with nothing configured, readable errors for bad values, secrets kept out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paytide.settings import ConfigError, Environment, LogFormat, Settings, load_settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_do_not_print_me_9f8e7d"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PAYTIDE_* variables and a working directory with no .env file."""
    for name in list(os.environ):
        if name.startswith("PAYTIDE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error() -> str:
    """The message `load_settings` raises for the current environment."""
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_defaults_need_no_configuration() -> None:
    """With no variables and no .env, every setting has a working local-development value."""
    settings = load_settings()
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.log_format is LogFormat.AUTO
    assert settings.log_level == "INFO"
    assert settings.api_port == 8000
    assert settings.temporal_address == "127.0.0.1:7233"
    assert settings.effective_database_url == f"sqlite:///{Path('.paytide') / 'ledger.db'}"
    assert settings.effective_api_url == "http://127.0.0.1:8000"
    assert settings.effective_sandbox_webhook_url == "http://127.0.0.1:8000/webhooks/sandbox"


@pytest.mark.parametrize(
    ("variable", "value", "expected_form"),
    [
        ("PAYTIDE_API_PORT", "abc", "valid integer"),
        ("PAYTIDE_TEMPORAL_ADDRESS", "nohost", "HOST:PORT"),
        ("PAYTIDE_DATABASE_URL", "mysql://x", "sqlite:///PATH or postgresql+psycopg://"),
        ("PAYTIDE_DEFAULT_MERCHANT", "acme:eu", "never ':'"),
    ],
)
def test_bad_value_names_the_variable_and_the_expected_form(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected_form: str
) -> None:
    """A value paytide cannot use raises ConfigError naming the variable, its value and the form."""
    monkeypatch.setenv(variable, value)
    message = config_error()
    assert f"{variable}:" in message
    assert expected_form in message
    assert repr(value) in message


def test_dotenv_in_the_working_directory_is_read(clean_environment: Path) -> None:
    """A .env file in the current directory supplies PAYTIDE_* values."""
    (clean_environment / ".env").write_text(
        "PAYTIDE_API_PORT=9123\nPAYTIDE_TEMPORAL_NAMESPACE=payments-dev\n", encoding="utf-8"
    )
    settings = load_settings()
    assert settings.api_port == 9123
    assert settings.temporal_namespace == "payments-dev"


def test_bad_value_in_dotenv_is_reported_like_an_environment_variable(
    clean_environment: Path,
) -> None:
    """An unusable value in .env is a ConfigError naming the PAYTIDE_* variable."""
    (clean_environment / ".env").write_text("PAYTIDE_API_PORT=70000\n", encoding="utf-8")
    assert "PAYTIDE_API_PORT:" in config_error()


def test_secret_is_not_in_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook secret is read, yet repr(settings) shows only a mask."""
    monkeypatch.setenv("PAYTIDE_SANDBOX_WEBHOOK_SECRET", SECRET)
    settings = load_settings()
    assert settings.sandbox_webhook_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_secret_is_not_in_the_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ConfigError about another variable never quotes a secret that was set alongside it."""
    monkeypatch.setenv("PAYTIDE_SANDBOX_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("PAYTIDE_API_PORT", "abc")
    message = config_error()
    assert "PAYTIDE_API_PORT" in message
    assert SECRET not in message


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after they are read."""
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.api_port = 1  # type: ignore[misc]


def test_cli_with_a_bad_setting_exits_2_with_a_short_explanation(tmp_path: Path) -> None:
    """`paytide db current` with PAYTIDE_API_PORT=abc exits 2 with one paragraph, no traceback."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PAYTIDE_")}
    env["PAYTIDE_API_PORT"] = "abc"
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "paytide", "db", "current"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    message = done.stderr.strip()
    assert message.startswith("paytide db: ")
    assert "PAYTIDE_API_PORT" in message
    assert "\n\n" not in message
    assert done.stdout == ""
    # Nothing was created in the working directory: the command stopped before the ledger.
    assert list(tmp_path.iterdir()) == []
