"""The `opsconductor` command: run the embedded default, migrate, manage users, import targets, prune history,
run a command on targets through a server."""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import timedelta

import click

from common.config import Settings
from common.errors import ConfigError, DomainError
from common.logs import configure_logging


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def main() -> None:
    """OpsConductor: remote command execution over SSH."""
    configure_logging()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
def standalone(host: str, port: int) -> None:
    """Run everything in one process on SQLite in ./var (the embedded default)."""
    from opsconductor.standalone import build

    try:
        embedded = build(Settings.from_env(embedded=True)).start(host, port)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"OpsConductor (embedded) serving http://{host}:{embedded.port}  (Ctrl-C to stop)", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    embedded.stop()


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations (safe to run from several processes at once)."""
    from common.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@main.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "operator", "viewer"]), default="operator", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Prompted for when not given.")
def users_create(username: str, role: str, password: str) -> None:
    """Create a user."""
    from common.db import Database
    from common.services.users import create_user

    database = Database(_settings().database_url)
    try:
        with database.session() as session:
            user = create_user(session, username, password, role)
            click.echo(f"created user id={user.id} username={user.username} role={user.role}")
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc


@main.group()
def targets() -> None:
    """Targets."""


@targets.command("import")
@click.argument("inventory", type=click.Path(exists=True))
@click.option("--credential", "credential_name", metavar="NAME",
              help="The credential (by name) the imported SSH targets log in with.")
@click.option("--dry-run", is_flag=True, help="Print what would be created and updated, write nothing.")
def targets_import(inventory: str, credential_name: str | None, dry_run: bool) -> None:
    """Create or update targets from an Ansible inventory (INI or YAML), matched by name.

    ansible_host, ansible_port and groups become the address, port and tags; all hosts or none."""
    from common.db import Database
    from opsconductor.inventory import AnsibleMissing, InventoryError, import_inventory

    database = Database(_settings().database_url)
    try:
        result = import_inventory(database, inventory, credential_name, dry_run=dry_run)
    except (AnsibleMissing, InventoryError) as exc:
        raise click.ClickException(str(exc)) from exc
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        database.dispose()
    for name, reason in result.rejected.items():
        click.echo(f"{name}: {reason}", err=True)
    if result.rejected:
        raise click.ClickException(f"nothing was imported: {len(result.rejected)} of {result.hosts} hosts rejected")
    assert result.report is not None
    verbs = {"created": "would create", "updated": "would update", "unchanged": "unchanged"} if dry_run else {}
    width = max(len(o.name) for o in result.report.outcomes)
    for outcome in result.report.outcomes:
        serial = "-" if dry_run and outcome.action == "created" else outcome.target_serial
        changed = f"  ({', '.join(outcome.changed)})" if outcome.changed else ""
        click.echo(f"{outcome.name:<{width}}  {verbs.get(outcome.action, outcome.action):<12} {serial}{changed}")
    counts = ", ".join(f"{result.report.count(a)} {verbs.get(a, a)}" for a in ("created", "updated", "unchanged"))
    click.echo(f"{result.hosts} hosts: {counts}" + ("; dry run: nothing was written" if dry_run else ""))


class RunFailed(click.ClickException):
    """The run could not start or be followed (exit 2; 1 means it ran and a branch failed)."""

    exit_code = 2


@main.command("run")
@click.argument("command", nargs=-1)
@click.option("--selector", "-s", "selector_terms", multiple=True, metavar="TERMS",
              help="Targets: tag:NAME (every one given), anytag:NAME (any), name:GLOB; comma-separated or repeated.")
@click.option("--job", metavar="J20260001", help="Run this saved job instead of a command (--selector overrides "
                                                 "its targets).")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="A value for the job's parameter.")
@click.option("--max-concurrency", metavar="N|P%", help="At most this many branches at once.")
@click.option("--max-errors", metavar="N|P%", help="Stop starting branches once more than this many failed.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="The command's timeout on each target.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: the execution, each branch, "
                                                      "a summary.")
@click.option("--url", metavar="URL", help="The server (default: OPSCONDUCTOR_URL, the config file, "
                                           "http://127.0.0.1:8000).")
def run_command(command: tuple[str, ...], selector_terms: tuple[str, ...], job: str | None, params: tuple[str, ...],
                max_concurrency: str | None, max_errors: str | None, timeout: float | None, as_json: bool,
                url: str | None) -> None:
    """Run COMMAND (after --) on the selected targets through a running server, and print each target's
    result as it finishes. Exit status: 0 every branch succeeded, 1 one failed, 2 the run could not start.

      opsconductor run --selector tag:web -- uptime
    """
    from opsconductor import adhoc, remote
    from opsconductor.adhoc_output import HumanReporter, JsonReporter

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would bury the results
    if bool(command) == bool(job):
        raise click.UsageError("give a command after -- or --job, not both")
    if job and timeout is not None:
        raise click.UsageError("--timeout is for a command; a job's actions carry their own")
    try:
        selector = adhoc.parse_selector(selector_terms) or None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--selector") from exc
    if command and not selector:
        raise click.UsageError("a command needs --selector (e.g. --selector tag:web)")
    parameters = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--param")
        parameters[name] = value
    request = adhoc.RunRequest(command=" ".join(command) or None, job=job, selector=selector,
                               parameters=parameters, max_concurrency=max_concurrency, max_errors=max_errors,
                               timeout=timeout)
    out, err = sys.stdout, sys.stderr
    reporter: adhoc.Reporter = JsonReporter(out) if as_json else HumanReporter(out, err, progress=err.isatty())
    try:
        from enabledrm_sdk import ApiError, EnableDRMError
    except ImportError as exc:
        raise RunFailed(remote.SDK_MISSING) from exc
    try:
        settings = remote.resolve(url=url, warn=lambda message: click.echo(message, err=True))
        ask: Callable[[str], str] | None = None
        if sys.stdin.isatty():
            ask = lambda prompt: click.prompt(prompt, hide_input=True, err=True)  # noqa: E731
        with remote.connect(settings, ask_password=ask) as client:
            summary = adhoc.run(client, request, reporter)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ApiError as exc:
        details = f" {json.dumps(exc.details)}" if exc.details else ""
        raise RunFailed(f"{exc.status} {exc.error}: {exc.message}{details}") from exc
    except (remote.RemoteError, adhoc.RunError, EnableDRMError) as exc:
        raise RunFailed(str(exc)) from exc
    sys.exit(summary.exit_code)


@main.command()
@click.option("--older-than", "older_than", metavar="AGE",
              help="Prune executions that ended longer ago than this: 30d, 12h, 2w (default: RETENTION_DAYS days).")
@click.option("--dry-run", is_flag=True, help="Print what would be removed, remove nothing.")
def prune(older_than: str | None, dry_run: bool) -> None:
    """Remove the outputs, steps and events of old executions (their rows, and analytics, stay).

    The same batches as the maintenance loop's hourly pass: short transactions, safe beside it."""
    import time

    from common.db import Database
    from common.models import utcnow
    from common.models.base import rfc3339
    from common.services import retention

    settings = _settings()
    if older_than is None and not settings.retention_days:
        raise click.UsageError("RETENTION_DAYS is 0 (keep forever): give --older-than")
    try:
        age = retention.parse_age(older_than) if older_than is not None else timedelta(days=settings.retention_days)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    cutoff = utcnow() - age
    database = Database(settings.database_url)
    try:
        began = time.monotonic()
        counts = retention.prunable(database, cutoff) if dry_run else retention.prune(database, cutoff)
        elapsed = time.monotonic() - began
    finally:
        database.dispose()
    verb = "would prune" if dry_run else "pruned"
    click.echo(f"{verb} the history of {counts.executions:,} executions that ended before {rfc3339(cutoff)}:")
    for label, value in (("branch outputs", counts.outputs), ("branch steps", counts.steps),
                         ("events", counts.events)):
        click.echo(f"  {label:<15} {value:>12,}")
    click.echo("dry run: nothing was removed" if dry_run else f"in {elapsed:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
