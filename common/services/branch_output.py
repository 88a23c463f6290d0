"""A branch's stdout or stderr from a byte offset: from the live store while the branch may still
print, from its stored result once it has ended, in the same offsets either way (common/output.py)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from common import serials
from common.errors import NotFound
from common.live_output import OutputStore
from common.models import Branch, BranchStep
from common.output import OutputView
from common.statuses import BRANCH_ACTIVE

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class BranchOutput:
    branch_serial: str
    stream: str
    offset: int
    data: str
    next_offset: int
    running: bool
    truncated: bool


def read_output(session: Session, store: OutputStore, branch_serial: str, stream: str, offset: int) -> BranchOutput:
    """One statement, then the live store (a running branch) or a second statement (an ended branch
    with no stored result for the stream: one whose worker died keeps only the steps it recorded)."""
    serials.require("branch_serial", branch_serial)
    column = Branch.result_output if stream == "stdout" else Branch.result_error
    row = session.execute(select(Branch.id, Branch.status, column.label("stored"))
                          .where(Branch.branch_serial == branch_serial)).first()
    if row is None:
        raise NotFound("Branch not found", {"branch_serial": branch_serial})
    running = row.status in BRANCH_ACTIVE
    if running:
        view = store.view(branch_serial, stream) or OutputView(b"", b"", 0)  # nothing printed yet
    else:
        stored = row.stored if row.stored is not None else _from_steps(session, row.id, stream)
        view = OutputView.of_stored(stored)
    piece = view.read(offset)
    return BranchOutput(branch_serial, stream, piece.offset, piece.data, piece.next_offset, running, piece.truncated)


def _from_steps(session: Session, branch_id: int, stream: str) -> str:
    column = BranchStep.stdout if stream == "stdout" else BranchStep.stderr
    texts = session.scalars(select(column).where(BranchStep.branch_id == branch_id).order_by(BranchStep.position))
    return "".join(text for text in texts if text)
