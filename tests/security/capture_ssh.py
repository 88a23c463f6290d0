"""A hostile SSH server: what an operator would point a stored credential at to steal it. It
records every connection and every password or public key offered, and accepts none."""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import paramiko


@dataclass
class Captured:
    connections: int = 0
    passwords: list[str] = field(default_factory=list)
    public_keys: list[str] = field(default_factory=list)

    @property
    def secrets_offered(self) -> int:
        return len(self.passwords) + len(self.public_keys)


class _Interface(paramiko.ServerInterface):
    def __init__(self, captured: Captured, lock: threading.Lock):
        self.captured = captured
        self.lock = lock

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        with self.lock:
            self.captured.passwords.append(password)
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        with self.lock:
            self.captured.public_keys.append(key.get_base64())
        return paramiko.AUTH_FAILED


class CaptureServer:
    """Listens on ``address``:<free port> with a fresh RSA host key."""

    def __init__(self, address: str = "127.0.0.1"):
        self.host_key = paramiko.RSAKey.generate(2048)
        self.captured = Captured()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((address, 0))
        self._sock.listen(16)
        self.address = address
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="capture-ssh", daemon=True)

    @property
    def host_key_line(self) -> str:
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.captured.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.host_key)
        try:
            transport.start_server(server=_Interface(self.captured, self._lock))
            transport.accept(timeout=10)
        except (paramiko.SSHException, EOFError, OSError):
            pass
        finally:
            transport.close()
