"""MLLP framing (HL7 v2 MLLP release 2 block format) as a pure incremental decoder.

A block is <SB> payload <EB><CR>. The decoder is a state table like pynetdicom's fsm:
``(state, token) -> (action, next state)``; runs of payload bytes are consumed in bulk.
Nothing here raises on bad input: it reports events and resynchronises on the next <SB>.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SB = b"\x0b"
EB = b"\x1c"
CR = b"\x0d"

# Bytes kept from an oversized block, enough for its MSH so it can still be answered.
HEAD_BYTES = 4096

_MARKS = re.compile(b"[\x0b\x1c]")


def frame(payload: bytes) -> bytes:
    return SB + payload + EB + CR


@dataclass(frozen=True)
class Block:
    payload: bytes


@dataclass(frozen=True)
class Oversized:
    """A block larger than the limit: its first bytes and its full size."""

    head: bytes
    size: int


@dataclass(frozen=True)
class Junk:
    """Bytes that belong to no block (sent outside one, or cut off by a new <SB>)."""

    data: bytes
    reason: str


Event = Block | Oversized | Junk

IDLE, BLOCK, END, SKIP, SKIP_END = "idle", "block", "end", "skip", "skip_end"
TOK_SB, TOK_EB, TOK_CR, TOK_DATA = "SB", "EB", "CR", "DATA"
_TOKENS = {SB[0]: TOK_SB, EB[0]: TOK_EB, CR[0]: TOK_CR}


class MllpDecoder:
    """Feed bytes as they arrive; get back complete blocks and framing events in order."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.state = IDLE
        self._buf = bytearray()
        self._size = 0
        self._out: list[Event] = []

    def feed(self, data: bytes) -> list[Event]:
        data = bytes(data)
        i = 0
        while i < len(data):
            if self.state in (END, SKIP_END):
                token = _TOKENS.get(data[i], TOK_DATA)  # the byte after <EB> decides
                run = data[i : i + 1]
            else:
                # Between block marks every byte is data (CR ends segments, not blocks).
                mark = _MARKS.search(data, i)
                end = mark.start() if mark else len(data)
                token, run = (TOK_DATA, data[i:end]) if end > i else (_TOKENS[data[i]], data[i : i + 1])
            action, self.state = _TABLE[(self.state, token)]
            if action(self, run) is not _AGAIN:
                i += len(run)
        out, self._out = self._out, []
        return out

    # -- actions, named after what they do to the block ------------------------------

    def _idle_data(self, run: bytes) -> None:
        if run.strip(b"\r\n\t "):
            self._out.append(Junk(run, "data outside an MLLP block"))

    def _start_block(self, _: bytes) -> None:
        self._buf.clear()
        self._size = 0

    def _append(self, run: bytes) -> None:
        self._size += len(run)
        if self._size > self.max_size:
            self.state = SKIP
            del self._buf[HEAD_BYTES:]
            self._buf += run[: max(0, HEAD_BYTES - len(self._buf))]
            return
        self._buf += run

    def _count(self, run: bytes) -> None:
        self._size += len(run)

    def _restart_block(self, _: bytes) -> None:
        if self._buf:
            self._out.append(Junk(bytes(self._buf), "block start inside a block; partial block dropped"))
        self._start_block(b"")

    def _consume(self, _: bytes) -> None:
        """The byte only changes the state."""

    def _emit_block(self, _: bytes) -> None:
        self._out.append(Block(bytes(self._buf)))
        self._buf.clear()
        self._size = 0

    def _emit_block_again(self, byte: bytes) -> object:
        # <EB> not followed by <CR>: accept the block (senders differ) and re-read the byte.
        self._emit_block(byte)
        return _AGAIN

    def _emit_oversized(self, _: bytes) -> None:
        self._out.append(Oversized(bytes(self._buf[:HEAD_BYTES]), self._size))
        self._buf.clear()
        self._size = 0

    def _skip_end_again(self, _: bytes) -> object:
        return _AGAIN

    def _stray_eb(self, byte: bytes) -> None:
        self._out.append(Junk(byte, "block end outside a block"))


_AGAIN = object()
D = MllpDecoder
_TABLE = {
    (IDLE, TOK_DATA): (D._idle_data, IDLE),
    (IDLE, TOK_SB): (D._start_block, BLOCK),
    (IDLE, TOK_EB): (D._stray_eb, IDLE),
    (BLOCK, TOK_DATA): (D._append, BLOCK),
    (BLOCK, TOK_SB): (D._restart_block, BLOCK),
    (BLOCK, TOK_EB): (D._consume, END),
    (END, TOK_CR): (D._emit_block, IDLE),
    (END, TOK_SB): (D._emit_block_again, IDLE),
    (END, TOK_EB): (D._emit_block_again, IDLE),
    (END, TOK_DATA): (D._emit_block_again, IDLE),
    (SKIP, TOK_DATA): (D._count, SKIP),
    (SKIP, TOK_SB): (D._count, SKIP),
    (SKIP, TOK_EB): (D._emit_oversized, SKIP_END),
    (SKIP_END, TOK_CR): (D._consume, IDLE),
    (SKIP_END, TOK_SB): (D._skip_end_again, IDLE),
    (SKIP_END, TOK_EB): (D._skip_end_again, IDLE),
    (SKIP_END, TOK_DATA): (D._skip_end_again, IDLE),
}
del D
