"""Settings: production refuses missing or weak secrets; the embedded default generates and keeps them."""
import os
import pwd
import stat

import pytest

from common.config import Settings
from common.errors import ConfigError

STRONG = "s" * 40


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET_KEY", "OPSCONDUCTOR_SECRET_KEY", "OPSCONDUCTOR_EMBEDDED",
                 "LOCAL_RUN_AS", "CELERY_BROKER_URL"):
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


def test_celery_broker_url_takes_the_tasks_and_redis_keeps_the_rest(env):
    env.setenv("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1/x")
    env.setenv("JWT_SECRET_KEY", STRONG)
    env.setenv("OPSCONDUCTOR_SECRET_KEY", STRONG + "x")
    env.setenv("CELERY_BROKER_URL", "amqp://ops:pw@mq.example:5672/opsconductor")
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL needs REDIS_URL"):
        Settings.from_env()
    env.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    settings = Settings.from_env()
    assert settings.broker_url == "amqp://ops:pw@mq.example:5672/opsconductor"
    assert settings.redis_url == "redis://127.0.0.1:6379/3"


def test_no_secret_in_the_settings_repr(env):
    """A traceback or a debug line may print the settings: keys, passwords and URLs with one stay out."""
    secrets = {"DATABASE_URL": "postgresql+psycopg2://ops:db-pw-1@127.0.0.1/x", "JWT_SECRET_KEY": "j" * 40,
               "OPSCONDUCTOR_SECRET_KEY": "k" * 40, "REDIS_URL": "redis://:redis-pw-2@127.0.0.1:6379/3",
               "CELERY_BROKER_URL": "amqp://ops:mq-pw-3@mq.example:5672/opsconductor",
               "OPSCONDUCTOR_ADMIN_PASSWORD": "admin-pw-4", "METRICS_TOKEN": "metrics-token-5"}
    for name, value in secrets.items():
        env.setenv(name, value)
    shown = repr(Settings.from_env())
    assert "rate_limit_standard=" in shown  # the rest is still there
    for leak in ("db-pw-1", "j" * 40, "k" * 40, "redis-pw-2", "mq-pw-3", "admin-pw-4", "metrics-token-5"):
        assert leak not in shown, leak


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


def test_embedded_var_dir_and_database_are_private_from_the_start(env, tmp_path):
    settings = Settings.from_env()
    var = tmp_path / "var"
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    assert settings.database_url == f"sqlite:///{var / 'opsconductor.db'}"
    assert stat.S_IMODE((var / "opsconductor.db").stat().st_mode) == 0o600


def test_embedded_tightens_what_an_older_version_left_readable(env, tmp_path):
    first = Settings.from_env()
    var = tmp_path / "var"
    var.chmod(0o755)
    loose = {name: 0o644 for name in ("secrets.json", "opsconductor.db", "opsconductor.db-wal")}
    for name, mode in loose.items():
        (var / name).touch()
        (var / name).chmod(mode)
    (var / "secrets.json").write_text(
        f'{{"jwt_secret_key": "{first.jwt_secret_key}", "secret_key": "{first.secret_key}"}}')
    (var / "unrelated.txt").touch()
    (var / "unrelated.txt").chmod(0o644)

    again = Settings.from_env()
    assert again.jwt_secret_key == first.jwt_secret_key
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    assert {name: stat.S_IMODE((var / name).stat().st_mode) for name in loose} == dict.fromkeys(loose, 0o600)
    assert stat.S_IMODE((var / "unrelated.txt").stat().st_mode) == 0o644  # not ours to change


def test_embedded_refuses_a_var_dir_every_account_can_write(env, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    env.setenv("OPSCONDUCTOR_VAR_DIR", str(shared))
    with pytest.raises(ConfigError, match="is writable by every account"):
        Settings.from_env()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert not (shared / "secrets.json").exists()


NOBODY_UID = str(pwd.getpwnam("nobody").pw_uid)


@pytest.mark.parametrize("raw, expected", [(None, "nobody"), ("", "nobody"), ("  ", "nobody"), ("self", None),
                                           ("root", "root"), (NOBODY_UID, NOBODY_UID)])
def test_local_run_as(env, raw, expected):
    """Unset or empty keeps the default (an unset ${LOCAL_RUN_AS} in a compose file is empty); `self` opts out."""
    if raw is not None:
        env.setenv("LOCAL_RUN_AS", raw)
    assert Settings.from_env().local_run_as == expected


def test_unknown_local_run_as_account_refuses_to_start(env):
    env.setenv("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1/x")
    env.setenv("JWT_SECRET_KEY", STRONG)
    env.setenv("OPSCONDUCTOR_SECRET_KEY", STRONG + "x")
    env.setenv("LOCAL_RUN_AS", "no-such-account-xyz")
    with pytest.raises(ConfigError, match=r"LOCAL_RUN_AS='no-such-account-xyz': no such account on this host.*"
                                          r"LOCAL_RUN_AS=self"):
        Settings.from_env()
