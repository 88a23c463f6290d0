"""The interface every runner (SSH, local) implements; outcomes are data, not exceptions."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from common.output import OutputCollector


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


class OutputTap(Protocol):
    """Where a command's bytes go before its step records them (the branch's live stream: masking,
    publishing). Returns what the step may record, possibly holding some back until ``end``."""

    def feed(self, data: bytes) -> bytes: ...

    def end(self) -> bytes: ...


class OutputTaps(Protocol):
    @property
    def stdout(self) -> OutputTap: ...

    @property
    def stderr(self) -> OutputTap: ...


class TappedCollector(OutputCollector):
    """A step's stream that records what its tap lets through (secrets masked), not the raw bytes."""

    def __init__(self, cap: int, tap: OutputTap):
        super().__init__(cap)
        self._tap = tap

    def feed(self, data: bytes) -> None:
        super().feed(self._tap.feed(data))

    def end(self) -> None:
        super().feed(self._tap.end())


class StepRecorder:
    """One action's capped output streams and clock, turned into its StepResult. With ``output``, each
    stream goes through the branch's tap first."""

    def __init__(self, output_cap: int, output: OutputTaps | None = None):
        self.started_at = datetime.now(UTC)
        self.out = OutputCollector(output_cap) if output is None else TappedCollector(output_cap, output.stdout)
        self.err = OutputCollector(output_cap) if output is None else TappedCollector(output_cap, output.stderr)

    def result(self, exit_code: int | None, error_type: str | None, message: str | None) -> StepResult:
        for stream in (self.out, self.err):
            if isinstance(stream, TappedCollector):
                stream.end()  # bytes a tap held back (a possible secret's start) are decided now
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
        output: OutputTaps | None = None,
    ) -> StepResult:
        """Run one command to its end, its timeout or a cancel.

        ``output``: the branch's taps each stream passes through as it is read (live output, masking);
        the StepResult holds what they let through.

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
