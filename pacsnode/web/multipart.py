"""multipart/related responses written as they are produced (PS3.18 8.7.1.2).

The response is a chunked StreamResponse: each part goes out when it is ready and is then
dropped, so the memory a study retrieval takes is one instance, not the study. Large files
are sent in slices read from disk.
"""
from __future__ import annotations

import uuid

from aiohttp import web

_SLICE = 1024 * 1024


class MultipartStream:
    """``await start()``, then ``await part(content_type, data)`` per part, then ``await finish()``."""

    def __init__(self, request: web.Request, inner_type: str, status: int = 200, headers: dict | None = None) -> None:
        self.request = request
        self.boundary = uuid.uuid4().hex
        self.inner_type = inner_type
        self.response = web.StreamResponse(status=status, headers=headers)
        self.response.content_type = "multipart/related"
        # aiohttp quotes nothing itself; dicomweb-client splits the header on ';' and '='.
        self.response.headers["Content-Type"] = (
            f'multipart/related; type="{inner_type}"; boundary={self.boundary}'
        )
        self.parts = 0
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self.response.enable_chunked_encoding()
            await self.response.prepare(self.request)

    async def part(self, content_type: str, data: bytes | bytearray | memoryview, extra: dict | None = None) -> None:
        """One part; ``data`` is written in slices (it may be a large instance)."""
        await self.start()
        head = [f"--{self.boundary}", f"Content-Type: {content_type}"]
        if extra:
            head += [f"{k}: {v}" for k, v in extra.items()]
        await self.response.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
        view = memoryview(data)
        for pos in range(0, len(view), _SLICE):
            await self.response.write(view[pos : pos + _SLICE])
        await self.response.write(b"\r\n")
        self.parts += 1

    async def part_from_chunks(self, content_type: str, chunks) -> None:
        """One part whose bytes come from an async iterator (a large file read in slices)."""
        await self.start()
        await self.response.write(f"--{self.boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii"))
        async for chunk in chunks:
            await self.response.write(chunk)
        await self.response.write(b"\r\n")
        self.parts += 1

    async def finish(self) -> web.StreamResponse:
        await self.start()
        await self.response.write(f"--{self.boundary}--\r\n".encode("ascii"))
        await self.response.write_eof()
        return self.response


def single_body(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    """A whole multipart body in memory (small answers: a few frames), copied once."""
    pieces: list[bytes] = []
    for content_type, data in parts:
        pieces += [f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii"), data, b"\r\n"]
    pieces.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(pieces)


def multipart_response(inner_type: str, parts: list[tuple[str, bytes]], status: int = 200) -> web.Response:
    """A small multipart/related answer built in memory, with a Content-Length."""
    boundary = uuid.uuid4().hex
    return web.Response(
        status=status,
        body=single_body(boundary, parts),
        headers={"Content-Type": f'multipart/related; type="{inner_type}"; boundary={boundary}'},
    )


async def send_multipart(request: web.Request, inner_type: str, parts: list[tuple[str, bytes]]) -> web.StreamResponse:
    """A multipart/related answer with a Content-Length, each part's bytes written as they are
    (no joined copy of a large frame)."""
    boundary = uuid.uuid4().hex
    heads = [f"--{boundary}\r\nContent-Type: {ct}\r\n\r\n".encode("ascii") for ct, _ in parts]
    tail = f"--{boundary}--\r\n".encode("ascii")
    response = web.StreamResponse(headers={"Content-Type": f'multipart/related; type="{inner_type}"; boundary={boundary}'})
    response.content_length = sum(len(h) + len(d) + 2 for h, (_, d) in zip(heads, parts)) + len(tail)
    await response.prepare(request)
    for head, (_, data) in zip(heads, parts):
        await response.write(head)
        await response.write(data)
        await response.write(b"\r\n")
    await response.write(tail)
    await response.write_eof()
    return response
