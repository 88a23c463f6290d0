"""Building a serving app from the environment: migrate, ensure the admin, wire dispatch and events."""
from __future__ import annotations

import logging
import os
import sys

from flask import Flask
from sqlalchemy.exc import IntegrityError

from api.app import create_app
from api.dispatch import Dispatcher
from common.config import Settings
from common.db import Database
from common.events import make_event_bus
from common.logs import configure_logging
from common.migrate import upgrade
from common.services.users import ensure_admin

log = logging.getLogger(__name__)


def ensure_startup_admin(settings: Settings, db: Database) -> None:
    """Create or reset the admin named by OPSCONDUCTOR_ADMIN_USERNAME; a generated password is printed once."""
    username = settings.admin_username or ("admin" if settings.embedded else None)
    if not username:
        return
    try:
        with db.session() as session:
            generated = ensure_admin(session, username, settings.admin_password)
    except IntegrityError:  # another process created it at the same moment
        return
    if generated:
        print(f"\n  OpsConductor admin created: username={username} password={generated}\n"
              "  (shown once; set OPSCONDUCTOR_ADMIN_PASSWORD to choose it)\n", file=sys.stderr, flush=True)


def production_app(settings: Settings | None = None) -> Flask:
    configure_logging()
    settings = settings or Settings.from_env()
    if os.environ.get("OPSCONDUCTOR_SKIP_MIGRATE") != "1":
        upgrade(settings.database_url)
    db = Database(settings.database_url)
    ensure_startup_admin(settings, db)
    return create_app(settings, db=db, dispatcher=Dispatcher.from_settings(settings),
                      events=make_event_bus(settings))
