"""Flask extensions, created bare here and bound to the app in create_app."""
from __future__ import annotations

from flask_jwt_extended import JWTManager
from flask_sock import Sock

from api.limits import limiter

jwt = JWTManager()
sock = Sock()

__all__ = ["jwt", "limiter", "sock"]
