"""The deployment files agree with each other: docker-compose.yml runs exactly the Procfile's commands
against PostgreSQL and Redis, the web process serves WebSockets, `make run` / `make test` are the
documented entry points and CI calls `make test`."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from gunicorn import util as gunicorn_util

from api.gunicorn_worker import JsonErrorThreadWorker
from tests.e2e.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
PROCFILE = REPO_ROOT / "Procfile"
APP_SERVICES = {"api": "web", "worker": "worker", "beat": "beat"}  # compose service -> Procfile process
DEFAULT_EXPANSION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-([^}]*)\}")


def normalize(command: str | list[str]) -> list[str]:
    """A command as argv: ${VAR:-default} replaced by its default, shell quoting and whitespace undone."""
    if isinstance(command, list):
        command = shlex.join(command)
    assert "$" not in DEFAULT_EXPANSION.sub("", command).replace("$$", ""), \
        f"a variable without a default cannot be compared: {command}"
    return shlex.split(DEFAULT_EXPANSION.sub(lambda m: m.group(2), command))


def procfile() -> dict[str, str]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        assert sep and re.fullmatch(r"[A-Za-z0-9_-]+", name), f"not a Procfile entry: {line!r}"
        assert name not in entries, f"duplicate Procfile entry {name}"
        entries[name] = command.strip()
    return entries


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the `<<: *app` merge keys
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), data
    return data


def _depends_on(service: dict) -> set[str]:
    deps = service.get("depends_on") or {}
    return set(deps) if isinstance(deps, (dict, list)) else set()


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def test_procfile_has_exactly_web_worker_and_beat():
    assert list(procfile()) == ["web", "worker", "beat"]


def test_web_is_gunicorn_with_a_websocket_capable_worker_on_port_env():
    web = procfile()["web"]
    assert _option(shlex.split(web), "--bind", "-b") == "0.0.0.0:${PORT:-8000}", web
    argv = normalize(web)
    assert argv[0] == "gunicorn" and "api.wsgi:app" in argv, argv
    # flask-sock on gunicorn needs a threaded worker (each socket holds a thread): gthread, in our subclass
    # that answers gunicorn's own refusals (oversized headers: 431) in the API's JSON envelope
    worker_class = _option(argv, "--worker-class", "-k")
    assert worker_class is not None, argv
    assert issubclass(gunicorn_util.load_class(worker_class), JsonErrorThreadWorker), worker_class
    threads = _option(argv, "--threads")
    assert threads is not None and int(threads) >= 16, "WebSockets hold a thread each: give the workers threads"
    # the access log must not carry query strings (`?token=`): %(U)s is the path only
    log_format = _option(argv, "--access-logformat")
    if _option(argv, "--access-logfile") is not None:  # gunicorn's default format would log the query
        assert log_format is not None
        assert not re.search(r"%\((r|q|u)\)s", log_format) and "%(U)s" in log_format, log_format


def test_worker_and_beat_commands():
    entries = procfile()
    worker = normalize(entries["worker"])
    assert worker[:4] == ["celery", "-A", "worker.main", "worker"], worker
    assert _option(worker, "--pool", "-P") == "threads", worker
    beat = normalize(entries["beat"])
    assert beat[:4] == ["celery", "-A", "worker.main", "beat"], beat


def test_compose_has_postgres_redis_api_worker_beat_and_an_ssh_demo_target(compose):
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker", "beat"} <= set(services), sorted(services)
    assert "postgres" in str(services["postgres"]["image"])
    assert "redis" in str(services["redis"]["image"])
    others = {name: svc for name, svc in services.items() if name not in {"postgres", "redis", *APP_SERVICES}}
    ssh_targets = [name for name, svc in others.items()
                   if "22" in [str(p).split(":")[-1] for p in (svc.get("expose") or []) + (svc.get("ports") or [])]]
    assert ssh_targets, f"no service exposing SSH (22) among {sorted(others)}"
    build = services[ssh_targets[0]].get("build")
    context = build.get("context") if isinstance(build, dict) else build
    assert context, "the SSH demo target is built from the repository"
    dockerfile = (REPO_ROOT / context / "Dockerfile").read_text()
    assert "openssh-server" in dockerfile and "sshd" in dockerfile, dockerfile


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_compose_app_service_runs_the_procfile_command(compose, service):
    svc = compose["services"][service]
    assert "command" in svc, f"{service} has no command"
    compose_argv = normalize(svc["command"])
    procfile_argv = normalize(procfile()[APP_SERVICES[service]])
    assert compose_argv == procfile_argv, f"\ncompose:  {compose_argv}\nProcfile: {procfile_argv}"


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_compose_app_service_uses_postgres_and_redis(compose, service):
    svc = compose["services"][service]
    env = _environment(svc)
    assert env.get("DATABASE_URL", "").startswith("postgresql+psycopg2://"), env
    assert "@postgres:" in env["DATABASE_URL"] or "@postgres/" in env["DATABASE_URL"], env["DATABASE_URL"]
    assert env.get("REDIS_URL", "").startswith("redis://redis:"), env
    for secret in ("JWT_SECRET_KEY", "OPSCONDUCTOR_SECRET_KEY"):
        assert secret in env, f"{service} must pass {secret} through"
        assert not re.fullmatch(r"[^$]{1,}", env[secret]), f"{secret} must come from the environment, not the file"
    assert {"postgres", "redis"} <= _depends_on(svc), svc.get("depends_on")
    assert svc.get("image") or svc.get("build"), f"{service} has no image"


def test_compose_api_publishes_the_web_port(compose):
    api = compose["services"]["api"]
    bind = _option(normalize(api["command"]), "--bind", "-b")
    port = bind.rsplit(":", 1)[1]
    assert any(str(p).split(":")[-1] == port for p in api.get("ports") or []), api.get("ports")


def test_readme_starts_with_make_run_and_make_test():
    head = "\n".join((REPO_ROOT / "README.md").read_text().splitlines()[:40])
    assert "make run" in head
    assert "make test" in head


def test_makefile_run_and_test_targets():
    makefile = (REPO_ROOT / "Makefile").read_text()

    def recipe(target: str) -> str:
        match = re.search(rf"^{target}:[^\n]*\n((?:\t[^\n]*\n?)+)", makefile, re.M)
        assert match, f"no `{target}` target in the Makefile"
        return match.group(1)

    assert "opsconductor standalone" in recipe("run")
    assert "pytest" in recipe("test")


def test_ci_calls_make_test():
    ci = REPO_ROOT / ".ci" / "run"
    lines = [line.split("#", 1)[0].strip() for line in ci.read_text().splitlines()]
    assert any(re.fullmatch(r"(exec\s+)?make\s+test", line) for line in lines), ci.read_text()
    assert ci.stat().st_mode & 0o111, ".ci/run must be executable"


def test_dockerfile_builds_the_image_compose_uses():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", dockerfile, re.M), dockerfile
    for needed in ("api", "worker", "common", "migrations", "opsconductor"):
        assert re.search(rf"^COPY\s+{needed}\b", dockerfile, re.M), f"the image lacks {needed}/"
    assert Path(REPO_ROOT / "pyproject.toml").is_file()
