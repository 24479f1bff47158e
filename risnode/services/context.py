"""What a change is made with: the config, the time, who caused it, how to wake senders."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from risnode.config import RisConfig


@dataclass(frozen=True)
class Context:
    config: RisConfig
    now: datetime
    # Recorded in each timeline entry: "hl7 ORM^O01 <control id>", "api", "mpps <uid>" ...
    source: str
    # Called (after commit, any thread) with a role whose outbound queue has new work.
    notify: Callable[[str], None] = field(default=lambda role: None, compare=False)

    @property
    def at(self) -> str:
        return self.now.isoformat(timespec="seconds")


def next_control_id(tx, ctx: Context) -> str:
    """MSH-10 for a message we send (ACKs included): unique for this node."""
    return f"{ctx.config.application[:8]}{tx.next_counter('control'):012d}"
