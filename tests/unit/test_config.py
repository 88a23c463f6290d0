"""Settings: production refuses missing or weak secrets; the embedded default generates and keeps them."""
import os
import stat

import pytest

from common.config import Settings
from common.errors import ConfigError

STRONG = "s" * 40


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET_KEY", "OPSCONDUCTOR_SECRET_KEY", "OPSCONDUCTOR_EMBEDDED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPSCONDUCTOR_VAR_DIR", str(tmp_path / "var"))
    return monkeypatch


def test_production_without_secrets_refuses_to_start(env):
    env.setenv("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1/x")
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY, OPSCONDUCTOR_SECRET_KEY"):
        Settings.from_env()


@pytest.mark.parametrize("weak", ["changeme", "short-secret"])
def test_production_with_weak_secret_refuses_to_start(env, weak):
    env.setenv("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1/x")
    env.setenv("JWT_SECRET_KEY", weak)
    env.setenv("OPSCONDUCTOR_SECRET_KEY", STRONG)
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY must be a random value"):
        Settings.from_env()


def test_production_reads_the_environment(env):
    env.setenv("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1/x")
    env.setenv("JWT_SECRET_KEY", STRONG)
    env.setenv("OPSCONDUCTOR_SECRET_KEY", STRONG + "x")
    env.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    env.setenv("RATE_LIMIT_STANDARD", "7 per minute")
    settings = Settings.from_env()
    assert not settings.embedded
    assert settings.broker_url == "redis://127.0.0.1:6379/3"
    assert settings.rate_limit_standard == "7 per minute"


def test_bad_number_is_a_config_error(env):
    env.setenv("OUTPUT_CAP_BYTES", "lots")
    with pytest.raises(ConfigError, match="OUTPUT_CAP_BYTES must be an integer"):
        Settings.from_env()


def test_embedded_generates_secrets_once_and_keeps_them(env, tmp_path):
    first = Settings.from_env()
    second = Settings.from_env()
    assert first.embedded and first.broker_url == "memory://"
    assert first.database_url.startswith("sqlite:///") and first.database_url.endswith("var/opsconductor.db")
    assert len(first.jwt_secret_key) >= 32
    assert (first.jwt_secret_key, first.secret_key) == (second.jwt_secret_key, second.secret_key)
    mode = stat.S_IMODE(os.stat(tmp_path / "var" / "secrets.json").st_mode)
    assert mode == 0o600
