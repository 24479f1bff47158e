"""`pacsnode appliance`: PACS and RIS as one imaging workflow, on embedded defaults.

Runs `pacsnode serve` and `risnode serve` as two child processes sharing one data folder
(``DATA/pacs``, ``DATA/ris``), wired to each other on loopback only through the standard
transactions, exactly as either would be wired to a third-party counterpart:

  RIS -> PACS   HL7 OMI^O23 (orders), ADT^A08 (demographics), ADT^A40 (merges)   --pacs-hl7 / --hl7-port
  PACS -> RIS   MPPS N-CREATE/N-SET forwarded, Instance Availability Notification  --mpps-forward / --ian
  PACS -> RIS   Modality Worklist C-FIND for accession numbers no order announced    --worklist

It prints the ports and AE titles once both listen, stops both on SIGINT/SIGTERM (exit 0),
and stops the other when one exits on its own (exit 1).
"""
from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 25.0


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=Path("./data"), help="data folder: DATA/pacs and DATA/ris (default ./data)")
    parser.add_argument("--host", default="127.0.0.1", help="address both nodes listen on (default 127.0.0.1)")
    pacs = parser.add_argument_group("PACS")
    pacs.add_argument("--ae-title", default="PACSNODE")
    pacs.add_argument("--port", type=int, default=11112, help="DICOM (default 11112)")
    pacs.add_argument("--hl7-port", type=int, default=2576, help="HL7 from the RIS (default 2576)")
    pacs.add_argument("--http-port", type=int, default=8042, help="DICOMweb, viewer, reconciliation API (default 8042)")
    pacs.add_argument("--workers", type=int, help="PACS worker processes (default: the number of cores)")
    pacs.add_argument("--remote", action="append", default=[], metavar="AET=HOST:PORT",
                      help="C-MOVE destination / storage commitment requester; repeatable")
    pacs.add_argument("--identity-policy", default="quarantine", choices=["quarantine", "coerce", "off"],
                      help="images contradicting their order (default quarantine)")
    pacs.add_argument("--study-stable-seconds", type=float, default=60.0, help="without MPPS, study complete after this quiet time")
    ris = parser.add_argument_group("RIS")
    ris.add_argument("--ris-ae-title", default="RISNODE")
    ris.add_argument("--ris-port", type=int, default=11113, help="DICOM: worklist, MPPS, IAN (default 11113)")
    ris.add_argument("--ris-hl7-port", type=int, default=2575, help="HL7 from the HIS (default 2575)")
    ris.add_argument("--ris-http-port", type=int, default=8043, help="REST API and front desk (default 8043)")
    ris.add_argument("--ehr", metavar="HOST:PORT", help="where results (ORU^R01) go")
    ris.add_argument("--billing", metavar="HOST:PORT", help="where charges (DFT^P03) go (default: the EHR)")
    ris.add_argument("--station", action="append", default=[], metavar="MODALITY=AET", help="Scheduled Station AE Title; repeatable")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def commands(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(pacsnode serve, risnode serve) command lines, wired to each other."""
    data = args.data.resolve()
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    ris_dicom = f"{args.ris_ae_title}={local}:{args.ris_port}"
    # -P: the children import the installed package, not a source tree that happens to be
    # the working folder (a checkout has no compiled kernels unless built in place).
    pacs = [
        sys.executable, "-P", "-m", "pacsnode.cli", "serve", "--data", str(data / "pacs"), "--host", args.host,
        "--ae-title", args.ae_title, "--port", str(args.port), "--http-port", str(args.http_port),
        "--hl7-port", str(args.hl7_port), "--worklist", ris_dicom, "--ian", ris_dicom, "--mpps-forward", ris_dicom,
        "--identity-policy", args.identity_policy, "--study-stable-seconds", str(args.study_stable_seconds),
        "--log-level", args.log_level,
    ]
    if args.workers:
        pacs += ["--workers", str(args.workers)]
    for remote in args.remote:
        pacs += ["--remote", remote]
    ris = [
        sys.executable, "-P", "-m", "risnode.cli", "serve", "--data", str(data / "ris"), "--host", args.host,
        "--ae-title", args.ris_ae_title, "--port", str(args.ris_port), "--hl7-port", str(args.ris_hl7_port),
        "--http-port", str(args.ris_http_port), "--pacs-hl7", f"{local}:{args.hl7_port}", "--completion-policy", "pacs",
        "--log-level", args.log_level,
    ]
    for key in ("ehr", "billing"):
        if getattr(args, key):
            ris += [f"--{key}", getattr(args, key)]
    for station in args.station:
        ris += ["--station", station]
    return pacs, ris


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run_appliance(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    ports = [args.port, args.hl7_port, args.http_port, args.ris_port, args.ris_hl7_port, args.ris_http_port]
    if len(set(ports)) != len(ports):
        parser.exit(2, "pacsnode: error: appliance: the six ports must all differ\n")
    pacs_cmd, ris_cmd = commands(args)
    stopping = False

    def stop(*_) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # The RIS first: the PACS's notifications and look-ups have somewhere to go.
    children = {"RIS": subprocess.Popen(ris_cmd), "PACS": subprocess.Popen(pacs_cmd)}
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    wanted = {"RIS": (args.ris_port, args.ris_hl7_port, args.ris_http_port), "PACS": (args.port, args.hl7_port, args.http_port)}
    deadline = time.monotonic() + _START_TIMEOUT
    code = 0
    while not stopping:
        dead = {name: p.returncode for name, p in children.items() if p.poll() is not None}
        if dead:
            print(f"pacsnode: error: appliance: {', '.join(f'{n} exited with {c}' for n, c in dead.items())}", file=sys.stderr)
            code = 1
            break
        if all(_listening(local, port) for ports in wanted.values() for port in ports):
            _banner(args)
            break
        if time.monotonic() > deadline:
            print("pacsnode: error: appliance: the nodes did not start listening in time", file=sys.stderr)
            code = 1
            break
        time.sleep(0.1)
    while not stopping and code == 0:
        dead = {name: p.returncode for name, p in children.items() if p.poll() is not None}
        if dead:
            print(f"pacsnode: error: appliance: {', '.join(f'{n} exited with {c}' for n, c in dead.items())}; stopping",
                  file=sys.stderr)
            code = 1
            break
        time.sleep(0.2)
    for name in ("PACS", "RIS"):  # the PACS first: its last notifications may still reach the RIS
        proc = children[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print("pacsnode appliance stopped", flush=True)
    return code


def _banner(args: argparse.Namespace) -> None:
    host = args.host
    data = args.data.resolve()
    lines = [
        f"pacsnode appliance: PACS and RIS running, data in {data} (pacs/, ris/)",
        f"  PACS  AE {args.ae_title:<16} DICOM {host}:{args.port}  (storage, query/retrieve, storage commitment, MPPS)",
        f"        HL7 {host}:{args.hl7_port} (from the RIS)  HTTP http://{host}:{args.http_port}/  "
        f"(DICOMweb, viewer, /api/reconciliation)",
        f"  RIS   AE {args.ris_ae_title:<16} DICOM {host}:{args.ris_port}  (modality worklist, MPPS, IAN)",
        f"        HL7 {host}:{args.ris_hl7_port} (ADT, ORM from the HIS)  HTTP http://{host}:{args.ris_http_port}/  (front desk, API)",
        f"  modality: worklist from {args.ris_ae_title}@{args.ris_port}; images, MPPS and storage commitment to "
        f"{args.ae_title}@{args.port} (MPPS is forwarded to the RIS)",
        f"  results to {args.ehr or '(no EHR: --ehr HOST:PORT)'}, charges to {args.billing or args.ehr or '(nowhere)'}",
        "ready",
    ]
    print("\n".join(lines), flush=True)
