"""`pacsnode appliance` and `pacsnode serve --hl7-port` as processes: bad options and busy
ports end with a clear message and a non-zero exit (the journey tests the clean stop)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.peers import REPO, free_port
from tests.platform.peers import Appliance

pytestmark = pytest.mark.integration


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "pacsnode.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_appliance_refuses_one_port_for_two_listeners(tmp_path):
    proc = _run(["appliance", "--data", str(tmp_path), "--port", "20000", "--ris-port", "20000"])
    assert proc.returncode == 2 and "must all differ" in proc.stderr


def test_appliance_with_a_busy_port_stops_both_nodes(tmp_path):
    appliance = Appliance(tmp_path / "data")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", appliance.hl7_port))
        busy.listen(1)
        proc = _run(appliance.command()[3:])
    assert proc.returncode == 1
    assert f"127.0.0.1:{appliance.hl7_port}" in proc.stderr and "PACS exited with 1" in proc.stderr


def test_serve_reports_a_busy_hl7_port(tmp_path):
    hl7_port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", hl7_port))
        busy.listen(1)
        proc = _run(["serve", "--data", str(tmp_path), "--port", str(free_port()), "--http-port", "0", "--hl7-port", str(hl7_port)])
    assert proc.returncode == 1 and f"cannot listen on 127.0.0.1:{hl7_port}" in proc.stderr
