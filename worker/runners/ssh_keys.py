"""Keys for the SSH runner: private key text parsed into paramiko keys (once per credential), and
host keys put in the one "type base64" form they are pinned in."""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable

import paramiko
from cryptography.hazmat.primitives import serialization
from paramiko.ssh_exception import PasswordRequiredException, SSHException

from .base import ConnectError, ConnectionSpec

logger = logging.getLogger(__name__)

# Per-process random key: a digest can tell credentials apart without holding them.
_SECRET_KEY = secrets.token_bytes(32)


def secret_digest(spec: ConnectionSpec) -> str:
    """Keyed digest of the secrets, so a transport authenticated with credential A is never
    reused for a spec carrying credential B even when the caller forgot credential_version."""
    mac = hmac.new(_SECRET_KEY, digestmod=hashlib.sha256)
    for part in (spec.password, spec.private_key, spec.passphrase):
        mac.update(b"\x01" + part.encode() if part is not None else b"\x00")
        mac.update(b"\x1f")
    return mac.hexdigest()


# --------------------------------------------------------------------------- host keys


def host_key_line(key: paramiko.PKey) -> str:
    """The "type base64" form used for pinning (same as a known_hosts entry without the host)."""
    return f"{key.get_name()} {key.get_base64()}"


def normalize_key_line(line: str) -> tuple[str, str]:
    """(type, base64) of a pinned line; a trailing comment must not make a pin differ."""
    parts = line.split()
    if len(parts) < 2:
        return (line.strip(), "")
    return (parts[0], parts[1])


def host_key_algorithms(pinned_type: str) -> list[str]:
    """Algorithms to offer so the server presents the pinned key (and not another of its keys)."""
    if pinned_type == "ssh-rsa":
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [pinned_type]


# --------------------------------------------------------------------------- private keys


_KEY_CLASSES: dict[str, type[paramiko.PKey]] = {
    "ssh-ed25519": paramiko.Ed25519Key,
    "ssh-rsa": paramiko.RSAKey,
    "ecdsa-sha2-nistp256": paramiko.ECDSAKey,
    "ecdsa-sha2-nistp384": paramiko.ECDSAKey,
    "ecdsa-sha2-nistp521": paramiko.ECDSAKey,
}


def _read_ssh_string(data: bytes, pos: int) -> tuple[bytes, int]:
    length = int.from_bytes(data[pos : pos + 4], "big")
    if pos + 4 + length > len(data):
        raise ValueError("truncated key data")
    return data[pos + 4 : pos + 4 + length], pos + 4 + length


def _openssh_key_type(text: str) -> str:
    """Key type of an OpenSSH-format private key, read from its unencrypted public part
    (so detection costs no passphrase KDF run)."""
    body = "".join(
        line.strip() for line in text.strip().splitlines() if line.strip() and not line.startswith("-----")
    )
    data = base64.b64decode(body)
    magic = b"openssh-key-v1\0"
    if not data.startswith(magic):
        raise ValueError("not an OpenSSH private key")
    pos = len(magic)
    for _ in range(3):  # cipher name, kdf name, kdf options
        _, pos = _read_ssh_string(data, pos)
    pos += 4  # number of keys
    public_blob, _ = _read_ssh_string(data, pos)
    key_type, _ = _read_ssh_string(public_blob, 0)
    return key_type.decode("ascii", "replace")


def load_private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    """Parse private key text of any supported type (ed25519, RSA, ECDSA), detected from the text.

    Raises ConnectError("auth_failed") with a message that never contains key material or the
    passphrase.
    """
    text = text.strip() + "\n"
    first = next((line.strip() for line in text.splitlines() if line.startswith("-----BEGIN")), "")
    try:
        if "OPENSSH PRIVATE KEY" in first:
            key_type = _openssh_key_type(text)
            key_class = _KEY_CLASSES.get(key_type)
            if key_class is None:
                raise ConnectError("auth_failed", f"unsupported private key type {key_type!r}")
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        if "RSA PRIVATE KEY" in first:
            return paramiko.RSAKey.from_private_key(io.StringIO(text), password=passphrase)
        if "EC PRIVATE KEY" in first:
            return paramiko.ECDSAKey.from_private_key(io.StringIO(text), password=passphrase)
        if "PRIVATE KEY" in first:  # PKCS#8: convert to OpenSSH format, then load as above
            obj = serialization.load_pem_private_key(
                text.encode(), password=passphrase.encode() if passphrase else None
            )
            converted = obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ).decode()
            return load_private_key(converted, None)
    except ConnectError:
        raise
    except PasswordRequiredException:
        raise ConnectError("auth_failed", "private key is encrypted and no passphrase was given") from None
    except (SSHException, ValueError, TypeError, IndexError, UnicodeError) as exc:
        logger.debug("private key rejected: %s", type(exc).__name__)
        raise ConnectError(
            "auth_failed", "private key could not be loaded (wrong passphrase or malformed key)"
        ) from None
    raise ConnectError("auth_failed", "private key text is not in a recognised format")


class KeyCache:
    """Parsed private keys by secret digest, single-flight. Parsing a passphrase-protected OpenSSH
    key runs bcrypt: ~120 ms of CPU each time on this machine, so a cold fan-out to 100 targets
    sharing one credential would pay it 100 times, all at once. A key that fails to parse is not
    kept (the next attempt reports the same error)."""

    def __init__(self, size: int = 128) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, paramiko.PKey] = OrderedDict()
        self._gates: dict[str, threading.Lock] = {}

    def get(self, digest: str, load: Callable[[], paramiko.PKey]) -> paramiko.PKey:
        with self._lock:
            if digest in self._keys:
                self._keys.move_to_end(digest)
                return self._keys[digest]
            gate = self._gates.setdefault(digest, threading.Lock())
        with gate:  # the first caller parses; the others wait for its result
            with self._lock:
                if digest in self._keys:
                    return self._keys[digest]
            try:
                key = load()
            finally:
                with self._lock:
                    self._gates.pop(digest, None)
            with self._lock:
                self._keys[digest] = key
                while len(self._keys) > self._size:
                    self._keys.popitem(last=False)
            return key

    def __len__(self) -> int:
        return len(self._keys)
