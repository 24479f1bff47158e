"""The clients every server is driven with: DCMTK's storescu, movescu, getscu, and a
pynetdicom C-FIND SCU that runs many queries inside one association."""
from __future__ import annotations

import functools
import logging
import os
import re
import socket
import subprocess
import time
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_FIND

HOST = "127.0.0.1"
# The anchors' six study-level return keys (the matching key is returned as well).
RETURN_KEYS = ("StudyInstanceUID", "PatientName", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription")

logging.getLogger("pynetdicom").setLevel(logging.ERROR)


class Missing(RuntimeError):
    """A program the benchmark needs is not installed."""


@functools.cache
def dcmtk(program: str) -> str:
    """DCMTK's program in /usr/bin: pynetdicom installs apps with the same names on PATH."""
    path = f"/usr/bin/{program}"
    if os.path.exists(path):
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        if "dcmtk" in out.lower():
            return path
    raise Missing(f"DCMTK {program} (apt-get install dcmtk)")


def dcmtk_env() -> dict:
    """DCMTK's documented switch against Nagle + delayed ACK stalls (~44 ms per C-STORE here)."""
    return dict(os.environ, TCP_NODELAY="1")


def storescu_command(aet: str, port: int, paths: list[str]) -> list[str]:
    # -xe: propose Explicit VR LE first (the corpus is in it: nothing is converted);
    # -R: only the contexts the files need; +sd +r: send the folders' files.
    return [dcmtk("storescu"), "-aet", "STORESCU", "-aec", aet, "-xe", "-R", "+sd", "+r", HOST, str(port), *paths]


def run_storescu(aet: str, port: int, groups: list[list[str]], logdir: Path, tag: str) -> tuple[float, list[int]]:
    """One storescu process per group, all at once: (seconds until the last exits, exit codes)."""
    procs, logs = [], []
    t0 = time.perf_counter()
    for i, group in enumerate(groups):
        log = open(logdir / f"storescu-{tag}-{i}.log", "wb")
        logs.append(log)
        procs.append(subprocess.Popen(storescu_command(aet, port, group), stdout=log, stderr=subprocess.STDOUT,
                                      env=dcmtk_env()))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    for log in logs:
        log.close()
    return wall, codes


def split(items: list, n: int) -> list[list]:
    """``n`` groups as even as possible (4 associations = 4 quarters of the studies)."""
    groups = [items[i::n] for i in range(n)]
    return [g for g in groups if g]


def movescu(aet: str, port: int, dest: str, study_uid: str) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [dcmtk("movescu"), "-v", "-S", "-aet", "MOVESCU", "-aec", aet, "-aem", dest,
           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", HOST, str(port)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dcmtk_env())
    return time.perf_counter() - t0, proc


def getscu(aet: str, port: int, study_uid: str, out: Path | None) -> tuple[float, subprocess.CompletedProcess]:
    """C-GET a study into ``out``, or with ``out=None`` receive and discard it (``--ignore``)."""
    keep = ["-od", str(out)] if out is not None else ["--ignore"]
    cmd = [dcmtk("getscu"), "-v", "-S", "-aet", "GETSCU", "-aec", aet, *keep,
           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", HOST, str(port)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dcmtk_env())
    return time.perf_counter() - t0, proc


def completed_suboperations(op: str, proc: subprocess.CompletedProcess, expected: int) -> int | None:
    """Sub-operations a verbose movescu/getscu saw complete. getscu reports the count; movescu
    does not, and pending responses are optional, so a final Success (every sub-operation
    complete, none failed: PS3.4 C.4.2.1.5) counts as ``expected`` (the same archives' counts
    are verified by a receiver that writes files in the same run)."""
    log = proc.stdout + proc.stderr
    if op == "get":
        found = re.findall(r"Number of Completed Suboperations\s*:\s*(\d+)", log)
        return int(found[-1]) if found else None
    return expected if "Received Final Move Response (Success)" in log else None


class FindSession:
    """One pynetdicom association for many study-level C-FINDs (Study Root model)."""

    def __init__(self, host: str, port: int, aet: str) -> None:
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(STUDY_FIND)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
        self.assoc = ae.associate(host, port, ae_title=aet)
        if not self.assoc.is_established:
            raise RuntimeError(f"C-FIND association to {aet} on {port} refused")
        # pynetdicom leaves Nagle on; a C-FIND-RQ is two small PDUs that would wait for an ACK.
        self.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def find(self, keys: dict[str, str]) -> tuple[float, list[Dataset], int | None]:
        """(seconds from request to final response, matches, final status)."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for kw in ("PatientID", "StudyDate", *RETURN_KEYS, *keys):
            setattr(ds, kw, keys.get(kw, ""))
        self._park_reactor()
        matches, final = [], None
        t0 = time.perf_counter()
        for status, identifier in self.assoc.send_c_find(ds, STUDY_FIND):
            if status is None:  # association aborted or timed out
                break
            if status.Status in (0xFF00, 0xFF01):
                matches.append(identifier)
            else:
                final = status.Status
        return time.perf_counter() - t0, matches, final

    def _park_reactor(self) -> None:
        """Work around a race in pynetdicom 3.0.4's SCU, seen here about once per 1,000 queries
        against fast servers (pacsnode, dcmqrscp): send_c_find() pauses the association's
        reactor thread by clearing a checkpoint and waiting for ``_is_paused``, but that flag
        may still be True from a pass that already went through the checkpoint; the reactor
        then takes the first C-FIND-RSP off the queue as an "unexpected service message" and
        drops it (one match missing). Pausing it here, untimed, and giving it time to reach
        the checkpoint closes that window."""
        self.assoc._reactor_checkpoint.clear()
        time.sleep(0.002)  # the reactor loop sleeps 1 ms per pass
        while not self.assoc._is_paused:
            time.sleep(0.0001)

    def close(self) -> None:
        self.assoc.release()

    def __enter__(self) -> "FindSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def study_instance_counts(host: str, port: int, aet: str) -> dict[str, int]:
    """Study Instance UID -> Number of Study Related Instances, for every study held."""
    with FindSession(host, port, aet) as session:
        _, matches, final = session.find({"NumberOfStudyRelatedInstances": ""})
    if final != 0x0000:
        raise RuntimeError(f"C-FIND of all studies ended with status {final}")
    return {str(m.StudyInstanceUID): int(m.NumberOfStudyRelatedInstances or 0) for m in matches}
