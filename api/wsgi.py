"""WSGI entry for gunicorn (`api.wsgi:app`): production settings from the environment."""
import gc

from api.bootstrap import production_app

app = production_app()
gc.freeze()  # the app's long-lived objects leave the collector's view: fewer, shorter pauses per request
