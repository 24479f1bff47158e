"""MLLP framing: the incremental decoder on canned bytes, whole and split everywhere."""
from __future__ import annotations

import pytest

from risnode.hl7.framing import HEAD_BYTES, Block, Junk, MllpDecoder, Oversized, frame

MSG = b"MSH|^~\\&|A|B|C|D|20240501||ADT^A04|1|P|2.5\rPID|1||X\r"


def feed_all(data: bytes, max_size: int = 1024, chunk: int | None = None) -> list:
    decoder = MllpDecoder(max_size)
    if chunk is None:
        return decoder.feed(data)
    events = []
    for i in range(0, len(data), chunk):
        events += decoder.feed(data[i : i + chunk])
    return events


@pytest.mark.parametrize("chunk", [None, 1, 2, 7, 64])
def test_blocks_in_any_chunking(chunk):
    data = frame(MSG) + frame(MSG + b"OBX|1\r") + b"\r\n" + frame(b"MSH|x")
    assert feed_all(data, chunk=chunk) == [Block(MSG), Block(MSG + b"OBX|1\r"), Block(b"MSH|x")]


def test_data_outside_a_block_is_junk_and_skipped():
    events = feed_all(b"hello" + frame(MSG))
    assert events == [Junk(b"hello", "data outside an MLLP block"), Block(MSG)]


def test_new_start_inside_a_block_drops_the_partial_block():
    events = feed_all(b"\x0bMSH|partial" + frame(MSG))
    assert isinstance(events[0], Junk) and events[0].data == b"MSH|partial"
    assert events[1] == Block(MSG)


def test_end_block_without_cr_is_accepted():
    assert feed_all(b"\x0b" + MSG + b"\x1c" + frame(MSG)) == [Block(MSG), Block(MSG)]


def test_stray_end_block():
    assert feed_all(b"\x1c" + frame(MSG)) == [Junk(b"\x1c", "block end outside a block"), Block(MSG)]


@pytest.mark.parametrize("chunk", [None, 3, 1000])
def test_oversized_block_keeps_its_head_and_the_stream_goes_on(chunk):
    big = MSG + b"NTE|" + b"x" * 20000 + b"\r"
    events = feed_all(frame(big) + frame(MSG), max_size=5000, chunk=chunk)
    assert len(events) == 2
    assert isinstance(events[0], Oversized) and events[0].size == len(big)
    assert events[0].head == big[:HEAD_BYTES]
    assert events[1] == Block(MSG)


def test_incomplete_block_is_held():
    decoder = MllpDecoder(100)
    assert decoder.feed(b"\x0bMSH|") == []
    assert decoder.feed(b"\x1c\r") == [Block(b"MSH|")]
