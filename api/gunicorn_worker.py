"""The gunicorn worker of the web process (Procfile): gthread (flask-sock needs a thread per socket),
answering what gunicorn refuses itself, before Flask sees a request (a 100 KB header is a 431, a
4 KB request line a 414), in the API's JSON envelope instead of gunicorn's HTML page."""
from __future__ import annotations

import socket

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from api.errors import server_error_body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's signature, writing the envelope; `mesg` says what gunicorn refused."""
    body = server_error_body(status_int, mesg)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorThreadWorker(ThreadWorker):
    """gunicorn writes its own error pages through one function, util.write_error (called by
    Worker.handle_error); this worker points it at the envelope writer in its own process, before
    serving, instead of copying handle_error's exception-to-status table."""

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()
