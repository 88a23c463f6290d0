"""The interface every runner (SSH, local) implements; outcomes are data, not exceptions."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from worker.runners.output import OutputCollector


@dataclass(frozen=True)
class ConnectionSpec:
    """Everything a runner needs to reach one target. Secrets are already decrypted."""

    host: str
    port: int = 22
    username: str = "root"
    password: str | None = None
    private_key: str | None = None  # PEM / OpenSSH private key text
    passphrase: str | None = None
    known_host_key: str | None = None  # "ssh-ed25519 AAAA..." pinned on first use; None = trust on first use
    connect_timeout: float = 10.0
    credential_version: str = ""  # changes whenever the credential changes (pool key)

    def __repr__(self) -> str:  # never show secrets
        return f"ConnectionSpec(host={self.host!r}, port={self.port}, username={self.username!r})"


@dataclass
class StepResult:
    """Outcome of one action. error_type is None on success."""

    exit_code: int | None
    stdout: str
    stderr: str
    error_type: str | None  # a common.statuses.ErrorType (unreachable, timeout, connection_lost, ...)
    error_message: str | None
    started_at: datetime
    completed_at: datetime

    @property
    def duration(self) -> float:
        return (self.completed_at - self.started_at).total_seconds()


class StepRecorder:
    """One action's capped output streams and clock, turned into its StepResult."""

    def __init__(self, output_cap: int):
        self.started_at = datetime.now(UTC)
        self.out = OutputCollector(output_cap)
        self.err = OutputCollector(output_cap)

    def result(self, exit_code: int | None, error_type: str | None, message: str | None) -> StepResult:
        return StepResult(exit_code=exit_code, stdout=self.out.text(), stderr=self.err.text(),
                          error_type=error_type, error_message=message, started_at=self.started_at,
                          completed_at=datetime.now(UTC))


class ConnectError(Exception):
    """The runner never reached the point where a command could run (safe to report, never retried blindly)."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class Session(Protocol):
    """An open connection to one target, used for the actions of one branch."""

    host_key: str | None  # the key the target presented ("type base64"), for trust-on-first-use

    def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
        on_start: Callable[[int], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> StepResult:
        """Run one command to its end, its timeout or a cancel.

        ``env``: variables added to the command's environment (job parameters, OC_PARAM_*). They reach
        it as data, never as command text, so no value can be read as shell syntax.

        ``on_start`` is called at most once, with the PID of the command's process group leader
        as soon as it is known, from the calling thread: the group outlives a worker that dies,
        and whoever takes over needs the PID to kill it.
        """
        ...

    def close(self) -> None: ...


class Runner(Protocol):
    def open(self, spec: ConnectionSpec) -> Session: ...
