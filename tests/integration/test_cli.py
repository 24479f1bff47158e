"""`pacsnode` as a user runs it: help, version, options, config file, busy port, signals."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from pacsnode import __version__
from tests.integration.helpers import run
from tests.peers import REPO, Node, dcmtk, free_port

pytestmark = pytest.mark.integration

ENV = dict(os.environ, PYTHONPATH=str(REPO))


def pacsnode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pacsnode.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def test_version_and_help():
    version = pacsnode("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"pacsnode {__version__}"
    helptext = pacsnode("--help")
    assert helptext.returncode == 0
    for command in ("serve", "import", "conformance"):
        assert command in helptext.stdout
    serve_help = pacsnode("serve", "--help").stdout
    for option in ("--data", "--ae-title", "--host", "--port", "--remote", "--workers", "--config"):
        assert option in serve_help


@pytest.mark.parametrize(
    "args,message",
    [
        (["--port", "0"], "port 0"),
        (["--port", "http"], "invalid int value"),
        (["--ae-title", "A_TITLE_LONGER_THAN_16"], "AE title"),
        (["--remote", "NOPORT=127.0.0.1"], "AET=HOST:PORT"),
        (["--workers", "0"], "workers 0"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(tmp_path, args, message):
    proc = pacsnode("serve", "--data", str(tmp_path), *args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_busy_port_exits_1(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = pacsnode("serve", "--data", str(tmp_path), "--port", str(port))
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_config_file_and_options(tmp_path):
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'ae_title = "FROMFILE"\nport = {port}\nremote = ["VIEWER=127.0.0.1:104"]\nworkers = 1\n')
    node = Node(tmp_path / "data", ae_title="FROMFILE")
    node.port = port
    node.command = lambda: [sys.executable, "-m", "pacsnode.cli", "serve", "--config", str(config), "--data", str(node.data)]
    node.start()
    try:
        echo = run([dcmtk("echoscu"), "-aec", "FROMFILE", "127.0.0.1", str(port)])
        assert echo.returncode == 0, echo.stdout
        assert "1 worker(s)" in node.log_text() and "1 remote(s)" in node.log_text()
    finally:
        node.stop()
    config.write_text('ae_title = "X"\ncolour = "blue"\n')
    proc = pacsnode("serve", "--config", str(config))
    assert proc.returncode == 2 and "unknown keys colour" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_the_node_cleanly(node_factory, sig):
    node = node_factory()
    for _ in range(2):
        assert run([dcmtk("echoscu"), "-aec", node.ae_title, "127.0.0.1", str(node.port)]).returncode == 0
    node.wait_log("ECHOSCU", "released")
    node.proc.send_signal(sig)
    assert node.proc.wait(timeout=30) == 0
    node.proc = None
    log = node.log_text()
    assert "shutting down" in log and "Traceback" not in log
    # One line per association.
    assert sum("association ECHOSCU" in line for line in log.splitlines()) == 2
    with socket.socket() as again:  # the port is free for the next start
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", node.port))
