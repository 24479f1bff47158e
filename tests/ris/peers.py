"""The RIS as a real process, and an MLLP listener playing the EHR and billing."""
from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

from hl7.client import MLLPClient

from tests.peers import ServerProcess, free_port


class RisNode(ServerProcess):
    """`risnode serve` started as a process; restartable on the same data folder and ports."""

    def __init__(self, data: Path, extra: list[str] | None = None, ae_title: str = "RISNODE") -> None:
        super().__init__(data)
        self.hl7_port, self.port, self.http_port = free_port(), free_port(), free_port()
        self.ae_title = ae_title
        self.extra = extra or []

    def command(self) -> list[str]:
        return [sys.executable, "-m", "risnode.cli", "serve", "--data", str(self.data), "--hl7-port", str(self.hl7_port),
                "--port", str(self.port), "--http-port", str(self.http_port), "--ae-title", self.ae_title, *self.extra]

    def ports(self) -> list[int]:
        return [self.hl7_port, self.http_port, self.port]

    # -- clients ---------------------------------------------------------------------------

    def send(self, message: str | bytes, encoding: str = "utf-8") -> str:
        """Send one message with python-hl7's MLLP client; the ACK's text."""
        with MLLPClient("127.0.0.1", self.hl7_port, encoding=encoding) as client:
            reply = client.send_message(message)
        return reply.decode(encoding, "replace").strip("\x0b\x1c\r")

    def http(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as rsp:
                raw, code, ctype = rsp.read(), rsp.status, rsp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raw, code, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        return code, json.loads(raw) if "json" in ctype else raw.decode()

    def get(self, path: str) -> object:
        code, body = self.http("GET", path)
        assert code == 200, (code, body)
        return body


def msa(ack: str) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK."""
    line = next(s for s in ack.split("\r") if s.startswith("MSA"))
    fields = line.split("|")
    return fields[1], fields[2]


def err(ack: str) -> str:
    """ERR-2 (the error location) of an ACK, or ""."""
    line = next((s for s in ack.split("\r") if s.startswith("ERR")), "")
    return line.split("|")[2] if line else ""


class Hl7Listener:
    """A threaded MLLP server that ACKs AA and records what it got; stop() and start()
    keep the port, so a test can take the EHR down and bring it back."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[str] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Hl7Listener":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._thread.join(timeout=5)

    def _serve(self, sock: socket.socket) -> None:
        conns = []
        sock.settimeout(0.1)
        while self._sock is sock:
            try:
                conn, _ = sock.accept()
            except (socket.timeout, OSError):
                continue
            conns.append(conn)
            threading.Thread(target=self._client, args=(conn, sock), daemon=True).start()
        for conn in conns:  # a stopped EHR drops its connections too
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _client(self, conn: socket.socket, sock: socket.socket) -> None:
        buf = b""
        with conn:
            while self._sock is sock:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\x1c\r" in buf:
                    block, buf = buf.split(b"\x1c\r", 1)
                    text = block.lstrip(b"\x0b").decode("utf-8", "replace")
                    with self._lock:
                        self.received.append(text)
                    control = text.split("\r")[0].split("|")[9]
                    ack = f"MSH|^~\\&|EHR|HOSP|RISNODE|RADIOLOGY|20240501||ACK|A{control}|P|2.5.1\rMSA|AA|{control}\r"
                    conn.sendall(b"\x0b" + ack.encode() + b"\x1c\r")

    def messages(self, kind: str | None = None) -> list[str]:
        with self._lock:
            return [m for m in self.received if kind is None or f"|{kind}" in m.split("\r")[0]]

    def wait_for(self, count: int, kind: str | None = None, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(kind)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.messages(kind))} {kind or ''} message(s) after {timeout}s, expected {count}")


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached after {timeout}s")
