"""WSGI entry for gunicorn (`api.wsgi:app`): production settings from the environment."""
from api.bootstrap import production_app

app = production_app()
