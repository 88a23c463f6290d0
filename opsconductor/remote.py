"""How the command reaches a running server: its URL and a token, or a username and password to log in
with, from options, the environment (OPSCONDUCTOR_URL, OPSCONDUCTOR_TOKEN, OPSCONDUCTOR_USERNAME,
OPSCONDUCTOR_PASSWORD) or a TOML file, first found wins; then a signed-in SDK client."""
from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from enabledrm_sdk import EnableDRMClient

DEFAULT_URL = "http://127.0.0.1:8000"  # `make run`
KEYS = ("url", "token", "username", "password")
SDK_MISSING = "this command uses the Python SDK: pip install ./sdk/python (from a checkout of the repository)"


class RemoteError(RuntimeError):
    """No usable connection settings, or the server refused them."""


@dataclass(frozen=True)
class Remote:
    url: str
    token: str | None = None
    username: str | None = None
    password: str | None = None


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("OPSCONDUCTOR_CONFIG"):
        return Path(environ["OPSCONDUCTOR_CONFIG"])
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opsconductor" / "config.toml"


def _read_file(path: Path, warn: Callable[[str], None]) -> dict[str, str]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RemoteError(f"cannot read {path}: {exc}") from exc
    unknown = set(data) - set(KEYS)
    if unknown:
        raise RemoteError(f"{path}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(KEYS)})")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise RemoteError(f"{path}: {', '.join(sorted(bad))} must be a string")
    if ("token" in data or "password" in data) and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"warning: {path} holds a secret and others may read it (chmod 600 {path})")
    return data


def resolve(*, url: str | None = None, token: str | None = None, username: str | None = None,
            environ: Mapping[str, str] = os.environ, warn: Callable[[str], None] = print) -> Remote:
    """Options first, then OPSCONDUCTOR_* variables, then the config file. A token and a username come as
    a pair with where they were found: a token from the environment is not mixed with a file's login. Where
    that place names a server too, they go to that server only: a file's token for production is not sent
    to the OPSCONDUCTOR_URL or --url of another one."""
    given = {"url": url, "token": token, "username": username}
    env = {k: environ.get(f"OPSCONDUCTOR_{k.upper()}") or None for k in KEYS}
    path = config_path(environ)
    file = _read_file(path, warn)
    chosen_url = given["url"] or env["url"] or file.get("url") or DEFAULT_URL
    elsewhere = []
    for where, source in (("the options", given), ("the environment", env), (str(path), file)):
        if not (source.get("token") or source.get("username")):
            continue
        server = source.get("url")
        if server and server.rstrip("/") != chosen_url.rstrip("/"):
            elsewhere.append(f"{where} has them for {server}")
            continue
        if source.get("token"):
            return Remote(chosen_url, token=source["token"])
        password = source.get("password") or env["password"]
        return Remote(chosen_url, username=source["username"], password=password)
    raise RemoteError(f"no credentials for {chosen_url}" + (f" ({'; '.join(elsewhere)})" if elsewhere else "")
                      + ": set OPSCONDUCTOR_TOKEN (or OPSCONDUCTOR_USERNAME and OPSCONDUCTOR_PASSWORD), "
                      f"or write them to {path}")


def connect(remote: Remote, *, ask_password: Callable[[str], str] | None = None) -> EnableDRMClient:
    """A client signed in to the server: with the token, or by logging in (asking for a missing password
    when `ask_password` is given). Rate limits are waited out rather than failed on."""
    try:
        from enabledrm_sdk import ApiError, EnableDRMClient, TransportError
    except ImportError as exc:
        raise RemoteError(SDK_MISSING) from exc
    client = EnableDRMClient(remote.url, remote.token, max_retries=10, user_agent="opsconductor-cli")
    if remote.token:
        return client
    assert remote.username is not None
    password = remote.password
    if password is None:
        if ask_password is None:
            client.close()
            raise RemoteError(f"no password for {remote.username!r}: set OPSCONDUCTOR_PASSWORD")
        password = ask_password(f"password for {remote.username} at {remote.url}")
    try:
        client.auth.login(remote.username, password)
    except (ApiError, TransportError) as exc:
        client.close()
        raise RemoteError(f"cannot sign in to {remote.url} as {remote.username!r}: {exc}") from exc
    return client
