"""Sending a C-STORE request's PDUs: the dataset from memory, or from its file piece by piece
(services.part10.FileDataset: a large instance), each piece read once the transport has
taken the one before, so that only a few MB of it are ever held."""
from __future__ import annotations

import asyncio
import os
from typing import Awaitable, Callable

from pacsnode.services.part10 import FileDataset
from pacsnode.ul import pdu

_PIECE = 4 * 1024 * 1024


async def write_message(
    transport: asyncio.Transport,
    writable: Callable[[], Awaitable[object]],
    context_id: int,
    command: bytes,
    dataset: bytes | memoryview | FileDataset,
    max_pdu: int,
) -> None:
    """Write a command and its dataset as P-DATA-TF PDUs of at most ``max_pdu`` bytes;
    ``writable()`` returns once the transport wants more (its buffer has drained)."""
    head = pdu.p_data(context_id, True, command, max_pdu)
    if not isinstance(dataset, FileDataset):
        transport.writelines(head + pdu.p_data_parts(context_id, False, dataset, max_pdu))
        return
    transport.writelines(head)
    # Pieces of whole PDUs (the very PDUs of p_data, up to 4 MB ones); none longer than a piece.
    room = min(max_pdu - 6, _PIECE) if max_pdu else _PIECE
    piece = max(1, _PIECE // room) * room
    loop = asyncio.get_running_loop()
    fd = os.open(dataset.path, os.O_RDONLY)
    try:
        sent = 0
        while sent < dataset.length:
            await writable()
            if transport.is_closing():
                raise ConnectionError("the association ended while a dataset was being sent")
            size = min(piece, dataset.length - sent)
            data = await loop.run_in_executor(None, os.pread, fd, size, dataset.offset + sent)
            if len(data) != size:
                raise OSError(f"{dataset.path} is shorter than its dataset")
            sent += size
            transport.writelines(pdu.p_data_parts(context_id, False, data, room + 6, last=sent == dataset.length))
    finally:
        os.close(fd)
