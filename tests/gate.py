"""Branches that wait for the test: a local target's command that blocks until the test lets it go, so
"the execution goes on while the client is away" is something a test makes happen, not a race it
hopes to win. Used by the event-stream e2e tests and the SDK resume tests."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.sshd import wait_until


class Gate:
    """Each running branch makes a file ``wait.XXXXXX`` in the gate's directory and ends once
    ``wait.XXXXXX.go`` (that branch) or ``all.go`` (every branch, now and later) exists; after 60 s it
    gives up, so a failed test leaves no command behind. The directory is world-writable (local
    commands may run as ``nobody``): put it under a root every account can traverse."""

    def __init__(self, root: Path | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="gate-", dir=root))
        self.dir.chmod(0o777)
        self.released: set[str] = set()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc) -> None:
        self.release_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def command(self) -> str:
        return (f't=$(mktemp {self.dir}/wait.XXXXXX); i=0; '
                f'while [ ! -e "$t.go" ] && [ ! -e {self.dir}/all.go ] && [ $i -lt 3000 ]; '
                f'do sleep 0.02; i=$((i+1)); done; echo released')

    def waiting(self) -> list[str]:
        """The branches waiting now (or released and not yet gone), by file name."""
        return sorted(p.name for p in self.dir.glob("wait.*") if not p.name.endswith(".go"))

    def wait_for_waiting(self, count: int, timeout: float = 30.0) -> list[str]:
        return wait_until(lambda: len(self.waiting()) >= count and self.waiting(), timeout=timeout, interval=0.02,
                          message=f"{count} branches to wait at the gate")

    def release(self, count: int) -> list[str]:
        """Let ``count`` waiting branches end (ones not released before)."""
        chosen = [name for name in self.waiting() if name not in self.released][:count]
        assert len(chosen) == count, f"only {chosen} of {count} branches are waiting"
        for name in chosen:
            (self.dir / f"{name}.go").touch()
            self.released.add(name)
        return chosen

    def release_all(self) -> None:
        if self.dir.exists():
            (self.dir / "all.go").touch()
