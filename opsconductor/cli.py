"""The `opsconductor` command: run the embedded default, migrate, manage users, prune history."""
from __future__ import annotations

import signal
import sys
import threading
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
