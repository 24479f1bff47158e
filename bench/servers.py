"""Start and stop each server under test as a process of its own, on 127.0.0.1.

Every server gets a fresh folder under the run's work folder and free ports. DCMTK's programs
and Orthanc run with TCP_NODELAY=1 in their environment (DCMTK's documented switch: without
it they stall on Nagle + delayed ACKs, ~22 instances/s, see shared/ANCHORS.md); pacsnode runs
WITHOUT it, since it must set the option on its sockets itself.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench import clients
from bench.clients import Missing, dcmtk, dcmtk_env

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
# Where the node's code is imported from: the work tree, or a frozen copy of it (snapshot()).
NODE_SOURCE = REPO


def snapshot(dest: Path, attempts: int = 6) -> str:
    """Run the node from a copy of pacsnode/ taken now (built kernels included): the work tree
    may change during a long run (others edit it), and results must describe one code state.
    A copy taken in the middle of an edit fails to import; it is taken again a little later."""
    global NODE_SOURCE
    for attempt in range(attempts):
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(REPO / "pacsnode", dest / "pacsnode", ignore=shutil.ignore_patterns("__pycache__"))
        check = subprocess.run([sys.executable, "-c", "import pacsnode.cli, pacsnode.dimse.server"],
                               capture_output=True, text=True, env=node_env(dest), cwd=dest)
        if check.returncode == 0:
            NODE_SOURCE = dest
            _help.cache_clear()
            return str(dest)
        time.sleep(10)
    raise RuntimeError(f"the work tree's pacsnode does not import: {check.stderr[-500:]}")


def node_env(source: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])))
    env.pop("TCP_NODELAY", None)  # the node must set TCP_NODELAY on its sockets itself
    return env
MOVE_SCUS = ("STORESCU", "FINDSCU", "MOVESCU", "GETSCU", "PYSCU")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


@functools.cache
def orthanc_binary() -> str:
    path = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not os.path.exists(path):
        raise Missing("Orthanc (apt-get install orthanc)")
    return path


def count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


class Server:
    """One server process; subclasses give its command line and how to count what it holds."""

    name = "server"
    aet = "SERVER"

    def __init__(self, workdir: Path, remotes: dict[str, int] | None = None) -> None:
        self.workdir = Path(workdir)
        self.remotes = remotes or {}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dcmtk_env()

    def prepare(self) -> None:
        """Write config files (the work folder exists and is empty)."""

    def start(self) -> "Server":
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.prepare()
        self._log = open(self.workdir.with_suffix(".log"), "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=self.env(),
                                     cwd=self.workdir)
        try:
            self.wait_ready()
        except Exception:
            self.stop(clean=False)
            raise
        return self

    def wait_ready(self) -> None:
        wait_port(self.port, self.proc)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def count(self) -> int:
        raise NotImplementedError

    def stop(self, clean: bool = True) -> None:
        """Stop the process we started (by its pid; a forked child exits with its association)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if hasattr(self, "_log"):
            self._log.close()
        if clean:
            shutil.rmtree(self.workdir, ignore_errors=True)


class PacsNode(Server):
    """`pacsnode serve`; ``remotes``: AE title -> port, or "PORT;associations=N" (--remote's options)."""

    name = "pacsnode"
    aet = "PACSNODE"

    def __init__(self, workdir: Path, remotes: dict[str, int | str] | None = None, workers: int | None = None,
                 extra: list[str] | None = None) -> None:
        super().__init__(workdir, remotes)
        self.workers = workers
        self.extra = extra or []

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def command(self) -> list[str]:
        cmd = [*pacsnode_cli(), "serve", "--data", str(self.data), "--port", str(self.port), "--ae-title", self.aet]
        for aet, port in self.remotes.items():
            cmd += ["--remote", f"{aet}={HOST}:{port}"]
        if self.workers and pacsnode_has("serve", "--workers"):
            cmd += ["--workers", str(self.workers)]
        return cmd + self.extra

    def env(self) -> dict:
        return node_env(NODE_SOURCE)

    def start(self, keep_data: bool = False) -> "PacsNode":
        if not keep_data:
            return super().start()  # type: ignore[return-value]
        # Keep an imported archive: only (re)start the process on it.
        self._log = open(self.workdir.with_suffix(".log"), "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=self.env(),
                                     cwd=self.workdir)
        self.wait_ready()
        return self

    def import_folders(self, folders: list[str]) -> subprocess.CompletedProcess:
        """Bulk-load with `pacsnode import` (node stopped); the caller checks it exists."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        cmd = [*pacsnode_cli(), "import", "--data", str(self.data), *folders]
        return subprocess.run(cmd, env=self.env(), capture_output=True, text=True, cwd=self.workdir)

    def count(self) -> int:
        return sum(clients.study_instance_counts(HOST, self.port, self.aet).values())


def pacsnode_cli() -> list[str]:
    return [sys.executable, "-m", "pacsnode.cli"]


@functools.cache
def _help(*words: str) -> tuple[int, str]:
    proc = subprocess.run([*pacsnode_cli(), *words, "--help"], capture_output=True, text=True,
                          env=node_env(NODE_SOURCE), cwd=NODE_SOURCE)
    return proc.returncode, proc.stdout


def pacsnode_has(command: str, option: str | None = None) -> bool:
    """Whether this pacsnode has a subcommand (its --help works) or an option of one."""
    code, text = _help(command)
    return code == 0 and (option is None or option in text)


class StoreScp(Server):
    """DCMTK storescp writing files, one child process per association (--fork), as the anchors."""

    name = "storescp"
    aet = "STORESCP"

    def __init__(self, workdir: Path, aet: str = "STORESCP", discard: bool = False) -> None:
        super().__init__(workdir)
        self.aet = aet
        # --ignore: receive everything, write nothing (the receiver's file cost out of the way)
        self.discard = discard

    @property
    def out(self) -> Path:
        return self.workdir / "files"

    def prepare(self) -> None:
        self.out.mkdir()

    def command(self) -> list[str]:
        keep = ["--ignore"] if self.discard else ["-od", str(self.out)]
        return [dcmtk("storescp"), "--fork", "-aet", self.aet, *keep, str(self.port)]

    def count(self) -> int:
        return count_files(self.out)

    def clear(self) -> None:
        for path in self.out.iterdir():
            path.unlink()


class PyNetDicomScp(Server):
    name = "pynetdicom"
    aet = "PYSCP"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.storage_scp", "--port", str(self.port), "--aet", self.aet,
                "--out", str(self.workdir / "files")]

    def env(self) -> dict:
        return dict(os.environ, PYTHONPATH=str(REPO))

    def count(self) -> int:
        return count_files(self.workdir / "files")


class Orthanc(Server):
    """Debian's Orthanc with its defaults that matter here (SQLite index, SyncStorageArea on),
    the anchors' configuration: plugins off, HTTP only for counting, any SOP class accepted."""

    name = "orthanc"
    aet = "ORTHANC"

    def __init__(self, workdir: Path, remotes: dict[str, int] | None = None) -> None:
        super().__init__(workdir, remotes)
        self.http_port = free_port()

    def prepare(self) -> None:
        storage = str(self.workdir / "storage")
        # Orthanc refuses C-FIND/C-MOVE/C-GET from unknown AEs: our SCUs are declared (their
        # ports are never used); C-MOVE destinations are the real remotes.
        modalities = {aet.lower(): [aet, HOST, 1] for aet in MOVE_SCUS}
        modalities.update({aet.lower(): [aet, HOST, port] for aet, port in self.remotes.items()})
        config = {
            "Name": "pacsnode-bench",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": False,
            "MaximumStorageSize": 0,
            "MaximumPatientCount": 0,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "UnknownSopClassAccepted": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            "DicomModalities": modalities,
            "SaveJobs": False,
            "SyncStorageArea": True,
            "SynchronousCMove": True,
        }
        with open(self.workdir / "orthanc.json", "w") as fh:
            json.dump(config, fh, indent=1)

    def command(self) -> list[str]:
        return [orthanc_binary(), str(self.workdir / "orthanc.json")]

    def wait_ready(self) -> None:
        wait_port(self.http_port, self.proc)
        wait_port(self.port, self.proc)

    def rest(self, path: str):
        with urllib.request.urlopen(f"http://{HOST}:{self.http_port}{path}", timeout=60) as rsp:
            return json.loads(rsp.read())

    def count(self) -> int:
        return int(self.rest("/statistics")["CountInstances"])


class DcmQrScp(Server):
    """DCMTK dcmqrscp (its own index.dat), forking per association, the anchors' settings."""

    name = "dcmqrscp"
    aet = "DCMQRSCP"

    def __init__(self, workdir: Path, remotes: dict[str, int] | None = None, max_studies: int = 200) -> None:
        super().__init__(workdir, remotes)
        self.max_studies = max_studies

    @property
    def storage(self) -> Path:
        return self.workdir / "archive"

    def prepare(self) -> None:
        self.storage.mkdir()
        hosts = "\n".join(f"{aet.lower()} = ({aet}, {HOST}, {port})" for aet, port in self.remotes.items())
        (self.workdir / "dcmqrscp.cfg").write_text(
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n\n"
            f"HostTable BEGIN\n{hosts}\nHostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n"
            f"AETable BEGIN\n{self.aet} {self.storage} RW ({self.max_studies}, 1024mb) ANY\nAETable END\n"
        )

    def command(self) -> list[str]:
        return [dcmtk("dcmqrscp"), "-c", str(self.workdir / "dcmqrscp.cfg"), str(self.port)]

    def count(self) -> int:
        return sum(1 for p in self.storage.iterdir() if p.name != "index.dat")
