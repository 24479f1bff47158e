"""`risnode` as a program: help, version, bad options, busy ports, clean shutdown."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.peers import REPO, free_port, wait_port

pytestmark = pytest.mark.integration
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "risnode.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def test_help_and_version():
    assert "serve" in _run("--help").stdout
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.startswith("risnode ")
    assert "--hl7-port" in _run("serve", "--help").stdout


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "port 70000"),
    (["--ehr", "nowhere"], "HOST:PORT"),
    (["--ae-title", "A" * 17], "AE title"),
    (["--accession-pattern", "ACC"], "SEQ"),
    (["--hl7-port", "2575", "--port", "2575"], "different ports"),
])
def test_bad_options_exit_2(tmp_path, args, message):
    out = _run("serve", "--data", str(tmp_path / "d"), *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_unknown_toml_key(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("hl7_prot = 1\n")
    out = _run("serve", "--config", str(config))
    assert out.returncode == 2 and "unknown keys hl7_prot" in out.stderr


@pytest.mark.parametrize("option, what", [("--hl7-port", "HL7"), ("--http-port", "HTTP"), ("--port", "DICOM")])
def test_busy_port_exits_1(tmp_path, option, what):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        ports = {"--hl7-port": str(free_port()), "--http-port": str(free_port()), "--port": str(free_port()), option: str(port)}
        out = _run("serve", "--data", str(tmp_path / "d"), *[x for item in ports.items() for x in item])
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port} ({what})" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_clean_shutdown(tmp_path, sig):
    ports = [free_port() for _ in range(3)]
    proc = subprocess.Popen([sys.executable, "-m", "risnode.cli", "serve", "--data", str(tmp_path / "d"), "--hl7-port", str(ports[0]),
                             "--port", str(ports[1]), "--http-port", str(ports[2])],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, text=True)
    for port in ports:
        wait_port(port, proc)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "shutting down" in output and "Traceback" not in output


def test_read_commands_need_a_data_folder(tmp_path):
    out = _run("orders", "--data", str(tmp_path / "none"))
    assert out.returncode == 1 and "no RIS data" in out.stderr
