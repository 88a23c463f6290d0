"""Settings read once from the environment; production refuses to start on default secrets."""
from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from common.errors import ConfigError

log = logging.getLogger(__name__)

_MIN_SECRET_LEN = 32
DEFAULT_LOCAL_RUN_AS = "nobody"
LOCAL_RUN_AS_SELF = "self"  # LOCAL_RUN_AS=self: local commands run as the worker's own user, even root
_VAR_FILES = ("secrets.json", "opsconductor.db", "opsconductor.db-wal", "opsconductor.db-shm",
              "opsconductor.db-journal")


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """All configuration in one place. Build with `Settings.from_env()` or directly in tests. What may hold a
    secret (keys, passwords, URLs with a password in them) is left out of its repr, which a traceback or a
    debug line may print."""

    database_url: str = field(repr=False)
    jwt_secret_key: str = field(repr=False)
    secret_key: str = field(repr=False)  # Fernet key material for stored credentials
    # None: in-memory broker, in-process events, in-memory limits
    redis_url: str | None = field(default=None, repr=False)
    # CELERY_BROKER_URL: another broker for the branch tasks (amqp://…); Redis still carries events and limits
    celery_broker_url: str | None = field(default=None, repr=False)
    embedded: bool = False
    var_dir: str = "var"
    admin_username: str | None = None
    admin_password: str | None = field(default=None, repr=False)
    access_token_minutes: int = 60
    refresh_token_days: int = 30
    rate_limit_standard: str = "100 per minute"
    rate_limit_admin: str = "500 per minute"
    rate_limit_login: str = "20 per minute"
    rate_limits_enabled: bool = True
    max_body_bytes: int = 1024 * 1024
    output_cap_bytes: int = 1024 * 1024
    ssh_connect_timeout: float = 10.0
    default_action_timeout: float = 3600.0
    heartbeat_seconds: float = 2.0
    worker_lost_seconds: float = 15.0
    dispatch_grace_seconds: float = 10.0
    sweep_interval_seconds: float = 5.0
    ssh_pool_idle_seconds: float = 60.0
    ssh_keepalive_seconds: float = 10.0  # a link silent for about 3 × this is lost; 0 turns keepalives off
    redispatch_seconds: float = 300.0  # a queued branch's message not taken after this long is sent again
    database_retry_seconds: float = 600.0  # how long a worker keeps a result it cannot yet write
    worker_concurrency: int = 64  # threads per worker process; the only source (Procfile and compose pass none)
    # the account a root worker runs local targets' commands as; None: the worker's own user
    local_run_as: str | None = DEFAULT_LOCAL_RUN_AS
    # executions that ended more than this many days ago lose their outputs, steps and events (0: kept
    # forever); the maintenance loop prunes every retention_interval_seconds
    retention_days: int = 90
    retention_interval_seconds: float = 3600.0
    # GET /metrics on the API port (false: 404), open to any scraper unless metrics_token is set, then only
    # with `Authorization: Bearer <token>`; a worker serves its own on worker_metrics_port (0: none)
    metrics_enabled: bool = True
    metrics_token: str | None = field(default=None, repr=False)
    worker_metrics_port: int = 0
    worker_metrics_host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        if self.retention_days < 0:
            raise ConfigError(f"RETENTION_DAYS must be 0 (keep forever) or a number of days, got {self.retention_days}")
        if self.celery_broker_url and not self.redis_url:
            raise ConfigError("CELERY_BROKER_URL needs REDIS_URL as well: Redis carries the events, live output "
                              "and rate limits that every process shares")
        if not 0 <= self.worker_metrics_port <= 65535:
            raise ConfigError(f"WORKER_METRICS_PORT must be a TCP port (0: no metrics server), "
                              f"got {self.worker_metrics_port}")

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url or "memory://"

    def with_overrides(self, **kwargs) -> Settings:
        return replace(self, **kwargs)

    @classmethod
    def from_env(cls, *, embedded: bool | None = None) -> Settings:
        """Read the environment. Embedded mode (SQLite in ./var, generated secrets) is the default
        when no DATABASE_URL is given; otherwise real secrets are required."""
        if embedded is None:
            embedded = _env_bool("OPSCONDUCTOR_EMBEDDED", not os.environ.get("DATABASE_URL"))
        var_dir = os.environ.get("OPSCONDUCTOR_VAR_DIR", "var")
        database_url = os.environ.get("DATABASE_URL") or ""
        jwt_secret = os.environ.get("JWT_SECRET_KEY") or ""
        secret_key = os.environ.get("OPSCONDUCTOR_SECRET_KEY") or ""
        if embedded:
            _private_var_dir(Path(var_dir))
            if not database_url:
                database_url = f"sqlite:///{_private_file(Path(var_dir).resolve() / 'opsconductor.db')}"
            kept = _kept_secrets(Path(var_dir))
            jwt_secret = jwt_secret or kept["jwt_secret_key"]
            secret_key = secret_key or kept["secret_key"]
        else:
            missing = [n for n, v in (("DATABASE_URL", database_url), ("JWT_SECRET_KEY", jwt_secret),
                                      ("OPSCONDUCTOR_SECRET_KEY", secret_key)) if not v]
            if missing:
                raise ConfigError(f"production mode needs {', '.join(missing)} (or set OPSCONDUCTOR_EMBEDDED=1)")
            for name, value in (("JWT_SECRET_KEY", jwt_secret), ("OPSCONDUCTOR_SECRET_KEY", secret_key)):
                if len(value) < _MIN_SECRET_LEN or value.lower() in {"changeme", "secret", "change-me"}:
                    raise ConfigError(f"{name} must be a random value of at least {_MIN_SECRET_LEN} characters")
        return cls(
            database_url=database_url,
            jwt_secret_key=jwt_secret,
            secret_key=secret_key,
            redis_url=os.environ.get("REDIS_URL") or None,
            celery_broker_url=os.environ.get("CELERY_BROKER_URL") or None,
            embedded=embedded,
            var_dir=var_dir,
            admin_username=os.environ.get("OPSCONDUCTOR_ADMIN_USERNAME") or None,
            admin_password=os.environ.get("OPSCONDUCTOR_ADMIN_PASSWORD") or None,
            local_run_as=_local_run_as_from_env(),
            metrics_token=os.environ.get("METRICS_TOKEN") or None,
            **_tunables(cls),
        )


# fields read from the environment as they are, each defaulting to the field's own default
_TUNABLES = {
    "access_token_minutes": "JWT_ACCESS_TOKEN_MINUTES", "refresh_token_days": "JWT_REFRESH_TOKEN_DAYS",
    "rate_limit_standard": "RATE_LIMIT_STANDARD", "rate_limit_admin": "RATE_LIMIT_ADMIN",
    "rate_limit_login": "RATE_LIMIT_LOGIN", "rate_limits_enabled": "RATE_LIMITS_ENABLED",
    "max_body_bytes": "MAX_BODY_BYTES", "output_cap_bytes": "OUTPUT_CAP_BYTES",
    "ssh_connect_timeout": "SSH_CONNECT_TIMEOUT", "default_action_timeout": "DEFAULT_ACTION_TIMEOUT",
    "heartbeat_seconds": "HEARTBEAT_SECONDS", "worker_lost_seconds": "WORKER_LOST_SECONDS",
    "dispatch_grace_seconds": "DISPATCH_GRACE_SECONDS", "sweep_interval_seconds": "SWEEP_INTERVAL_SECONDS",
    "ssh_pool_idle_seconds": "SSH_POOL_IDLE_SECONDS", "worker_concurrency": "WORKER_CONCURRENCY",
    "ssh_keepalive_seconds": "SSH_KEEPALIVE_SECONDS", "redispatch_seconds": "REDISPATCH_SECONDS",
    "database_retry_seconds": "DATABASE_RETRY_SECONDS", "retention_days": "RETENTION_DAYS",
    "retention_interval_seconds": "RETENTION_INTERVAL_SECONDS", "metrics_enabled": "METRICS_ENABLED",
    "worker_metrics_port": "WORKER_METRICS_PORT", "worker_metrics_host": "WORKER_METRICS_HOST",
}


def _tunables(cls) -> dict:
    parsers: dict[type, Callable[[str, Any], Any]] = {bool: _env_bool, int: _env_int, float: _env_float,
                                                      str: lambda name, default: os.environ.get(name) or default}
    defaults = {f.name: f.default for f in fields(cls)}
    return {name: parsers[type(defaults[name])](env, defaults[name]) for name, env in _TUNABLES.items()}


def local_account(name: str) -> pwd.struct_passwd:
    """The account LOCAL_RUN_AS names (a user name or a numeric uid), or a ConfigError saying what to do."""
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"LOCAL_RUN_AS={name!r}: no such account on this host; create it, name another unprivileged "
            f"account, or set LOCAL_RUN_AS={LOCAL_RUN_AS_SELF} to run local commands as the worker's own user"
        ) from None


def _local_run_as_from_env() -> str | None:
    """Unset or empty means the default: an unset ``${LOCAL_RUN_AS}`` in a compose file expands to an empty
    value, which must not quietly turn the isolation off. Looked up here so a typo stops every process at
    start instead of failing the first local branch."""
    name = (os.environ.get("LOCAL_RUN_AS") or "").strip() or DEFAULT_LOCAL_RUN_AS
    if name == LOCAL_RUN_AS_SELF:
        return None
    local_account(name)
    return name


def _private_var_dir(var_dir: Path) -> None:
    """The embedded default keeps its secrets and its SQLite database (password hashes, encrypted
    credentials) in ``var_dir``: only the process's own user may enter it. A directory made by an older
    version (0755) is tightened; a directory every account can write to (``/tmp``) is refused, since
    anyone could have planted a secrets.json there and we cannot make it private without breaking it."""
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(var_dir.stat().st_mode)
    if mode & stat.S_IWOTH:
        raise ConfigError(f"OPSCONDUCTOR_VAR_DIR={str(var_dir)!r} is writable by every account; "
                          f"point it at a directory of its own")
    _tighten(var_dir.resolve(), 0o700)  # a symlinked var dir: its target
    for name in _VAR_FILES:
        _tighten(var_dir / name, 0o600)


def _tighten(path: Path, private: int) -> None:
    """chmod ``path`` to ``private`` if group or others have any access; a symlink is left alone."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or not mode & 0o077:
        return
    try:
        os.chmod(path, private)
    except PermissionError as exc:
        log.warning("cannot make %s private (mode %o): %s", path, mode, exc)
    else:
        log.warning("made %s private: mode %o -> %o", path, mode, private)


def _private_file(path: Path) -> Path:
    """Create ``path`` empty and 0600 unless it exists: SQLite would create it 0644, and gives its -wal and
    -journal files the database file's own mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    return path


def _kept_secrets(var_dir: Path) -> dict[str, str]:
    """Generate the embedded default's secrets once and keep them, so restarts keep tokens and credentials valid."""
    path = var_dir / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    from cryptography.fernet import Fernet

    values = {"jwt_secret_key": secrets.token_urlsafe(48), "secret_key": Fernet.generate_key().decode()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values
