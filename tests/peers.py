"""Real peers for the integration tests: DCMTK's programs and a node started as a process."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
# The source tree, put on the node's PYTHONPATH so `-m pacsnode.cli` works from any folder.
REPO = Path(__file__).resolve().parents[1]


def require(condition: bool, why: str) -> None:
    """A missing peer fails under CI=true and skips elsewhere (never counted as a pass)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{why} (CI=true: missing peers are failures)")
    pytest.skip(why)


def dcmtk(program: str) -> str:
    """Path to DCMTK's program, not pynetdicom's app of the same name earlier on PATH."""
    candidates = [f"/usr/bin/{program}", shutil.which(program)]
    for path in candidates:
        if path and os.path.exists(path):
            out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
            if "dcmtk" in out.lower() or "OFFIS" in out:
                return path
    require(False, f"DCMTK {program} not installed (apt-get install dcmtk)")
    raise AssertionError  # unreachable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class ServerProcess:
    """One of our nodes as a real process from this source tree, restartable on the same data
    folder; subclasses say how it is started and which ports it listens on."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.proc: subprocess.Popen | None = None
        self.log = data.parent / f"{data.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ports(self) -> list[int]:
        raise NotImplementedError

    def start(self):
        self._log_fh = open(self.log, "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(self.command(), stdout=self._log_fh, stderr=subprocess.STDOUT, env=env)
        for port in self.ports():
            wait_port(port, self.proc)
        return self

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(timeout=20)
        self._log_fh.close()
        self.proc = None
        return code

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, *words: str, timeout: float = 5.0) -> str:
        """The first log line holding every word, waiting for it (the node logs asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log_text().splitlines() if all(w in line for w in words)]
            if lines or time.monotonic() > deadline:
                assert lines, f"no log line with {words} in {self.log}"
                return lines[0]
            time.sleep(0.05)


@contextlib.contextmanager
def started(make: Callable[[int], ServerProcess]) -> Iterator[Callable[..., ServerProcess]]:
    """A factory of started processes (``make(n, **kwargs)`` builds the n-th); every one
    still running is stopped on exit."""
    running: list[ServerProcess] = []

    def start(**kwargs) -> ServerProcess:
        process = make(len(running), **kwargs)
        running.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in running:
            if process.proc is not None:
                process.stop()


class Node(ServerProcess):
    """`pacsnode serve` as a real process, restartable on the same data folder. ``remotes``:
    AE title -> port on 127.0.0.1, or ``"PORT;associations=N"`` (options after the port)."""

    def __init__(self, data: Path, remotes: dict[str, int | str] | None = None, ae_title: str = "PACSNODE", extra: list[str] | None = None) -> None:
        super().__init__(data)
        self.port = free_port()
        self.ae_title = ae_title
        self.remotes = remotes or {}
        self.extra = extra or []

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "pacsnode.cli", "serve", "--data", str(self.data), "--port", str(self.port), "--ae-title", self.ae_title]
        for aet, port in self.remotes.items():
            cmd += ["--remote", f"{aet}=127.0.0.1:{port}"]
        return cmd + self.extra

    def ports(self) -> list[int]:
        return [self.port]


class StoreSCP:
    """DCMTK's storescp as a process (a C-MOVE destination or a reference receiver).

    Received files land in ``folder``; ``options`` are storescp's own, e.g. ``+xa`` to accept
    every transfer syntax and ``+B`` to write each dataset exactly as it came off the wire.
    """

    def __init__(self, folder: Path, options: list[str] | tuple[str, ...] = (), ae_title: str = "STORESCP", port: int | None = None) -> None:
        self.folder = folder
        self.options = list(options)
        self.ae_title = ae_title
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = folder.parent / f"{folder.name}.storescp.log"

    def start(self) -> "StoreSCP":
        self.folder.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log, "ab")
        cmd = [dcmtk("storescp"), "-aet", self.ae_title, "-od", str(self.folder), *self.options, str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=self._log_fh, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_fh.close()
        self.proc = None

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def clear(self) -> None:
        for path in self.files():
            path.unlink()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
