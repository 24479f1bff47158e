"""Run every workload against pacsnode and the reference servers, in one run, on loopback.

  python -m bench.run                 # full run (~1 h on 2 cores), bench/results/run.json
  python -m bench.run --smoke         # tiny corpus, one round: a couple of minutes (CI)
  python -m bench.report bench/results/run.json    # the tables again

Workloads: (1) C-STORE ingest by DCMTK storescu, 1 and 4 associations, CT and small corpora,
into pacsnode, DCMTK storescp, Orthanc and a plain pynetdicom SCP; (2) C-FIND latency, 200
queries in one association, on the CT corpus in pacsnode, Orthanc and dcmqrscp, and on a
large archive (--find-archive-size) in pacsnode; (3) C-MOVE and C-GET of a 100-instance CT
study; (4) peak memory of pacsnode receiving one large multi-frame instance.

As root with `unshare` available, the run re-executes itself in a private network namespace
whose only interface is loopback (storescp, dcmqrscp and Orthanc's DICOM port cannot bind to
127.0.0.1 only; there they are unreachable from outside, and nobody else's ports collide).
A reference server that is not installed is skipped, except under CI=true, where it is an error.
Exit status: 0 when every receiver held everything it was sent and every query was answered
right; 1 otherwise; 2 when something needed is missing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import corpus, report, workloads
from bench.clients import Missing, dcmtk
from bench import servers
from bench.servers import REPO, orthanc_binary, pacsnode_has

IN_CI = os.environ.get("CI", "").lower() == "true"
CLIENT_PROGRAMS = ("storescu", "movescu", "getscu")
SERVER_NEEDS = {"pacsnode": (), "storescp": ("storescp",), "pynetdicom": (), "dcmqrscp": ("dcmqrscp",),
                "orthanc": ("Orthanc",)}


def log(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny corpora, one round, for CI")
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/run.json, smoke: smoke.json)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pacsnode-bench/work"), help="servers' data (bulky)")
    ap.add_argument("--corpus-dir", type=Path, default=Path("/tmp/pacsnode-bench/corpus"),
                    help="generated corpora, reused between runs")
    ap.add_argument("--workloads", default="ingest,qr,find,large",
                    help="any of ingest, qr (C-FIND/C-MOVE/C-GET on the CT corpus), find (large archive), large")
    ap.add_argument("--receivers", default="pacsnode,storescp,orthanc,pynetdicom", help="ingest receivers")
    ap.add_argument("--archives", default="pacsnode,orthanc,dcmqrscp", help="query/retrieve archives")
    ap.add_argument("--kinds", default="ct,small", help="ingest corpora")
    ap.add_argument("--assoc", default="1,4", help="concurrent associations for ingest")
    ap.add_argument("--rounds", type=int, help="timed rounds (default 3, smoke 1)")
    ap.add_argument("--find-archive-size", type=int, help="instances in the C-FIND archive (default 100000, smoke 200)")
    ap.add_argument("--find-refs", action="store_true",
                    help="also load the large C-FIND archive into Orthanc and dcmqrscp (slow)")
    ap.add_argument("--find-queries", type=int, default=200)
    ap.add_argument("--large-mb", type=float, help="size of the large instance in MB (default 200, smoke 8)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="pacsnode serve --workers, passed when the node has that option")
    ap.add_argument("--pacsnode-arg", action="append", default=[], metavar="ARG",
                    help="one more `pacsnode serve` argument, e.g. --pacsnode-arg=--no-fast-path (repeatable)")
    ap.add_argument("--settle", type=float, help="seconds of quiet before each timed run (default 3, smoke 0.3)")
    ap.add_argument("--no-netns", action="store_true", help="do not run inside a private network namespace")
    a = ap.parse_args(argv)
    a.rounds = a.rounds or (1 if a.smoke else 3)
    a.find_archive_size = a.find_archive_size or (200 if a.smoke else 100_000)
    a.large_mb = a.large_mb or (8 if a.smoke else 200)
    a.settle = a.settle if a.settle is not None else (0.3 if a.smoke else 3.0)
    a.out = a.out or REPO / "bench" / "results" / ("smoke.json" if a.smoke else "run.json")
    if a.smoke:
        a.corpus_dir = a.corpus_dir / "smoke"
    return a


def in_private_netns(argv: list[str]) -> int | None:
    """Re-run this command inside `unshare -n` with loopback up; None when that is not possible."""
    if os.environ.get("PACSNODE_BENCH_NETNS") == "1" or os.geteuid() != 0:
        return None
    if not (shutil.which("unshare") and shutil.which("ip")):
        return None
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return None
    env = dict(os.environ, PACSNODE_BENCH_NETNS="1")
    cmd = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, "-m", "bench.run", *argv]
    return subprocess.call(cmd, env=env, cwd=REPO)


def check_programs(a: argparse.Namespace) -> dict[str, str]:
    """What is missing, by server; a missing client or (under CI) any missing server is fatal."""
    for program in CLIENT_PROGRAMS:
        dcmtk(program)  # raises Missing
    skipped = {}
    for name in dict.fromkeys(a.receivers.split(",") + a.archives.split(",")):
        for program in SERVER_NEEDS[name]:
            try:
                orthanc_binary() if program == "Orthanc" else dcmtk(program)
            except Missing as exc:
                if IN_CI:
                    raise
                skipped[name] = f"not installed: {exc}"
    return skipped


def machine_facts() -> dict:
    def out(cmd: list[str], env: dict | None = None) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/").stdout.strip()
        except OSError:
            return ""

    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    import pydicom
    import pynetdicom

    source = hashlib.sha256()
    for path in sorted((servers.NODE_SOURCE / "pacsnode").rglob("*")):
        if path.suffix in (".py", ".pyx", ".pxd"):
            source.update(path.read_bytes())
    commit = out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = bool(out(["git", "-C", str(REPO), "status", "--porcelain", "--", "pacsnode"]))
    return {
        "machine": f"{os.cpu_count()} cores ({cpu}), {memory / 2**30:.0f} GiB, Linux {platform.release()}",
        "python": platform.python_version(), "pydicom": pydicom.__version__, "pynetdicom": pynetdicom.__version__,
        "dcmtk": out(["dpkg-query", "-W", "-f=${Version}", "dcmtk"]),
        "orthanc": out(["dpkg-query", "-W", "-f=${Version}", "orthanc"]),
        "pacsnode": f"{commit}{' + uncommitted changes' if dirty else ''}",
        "pacsnode_source_sha256": source.hexdigest()[:16],
        "pacsnode_native_kernels": out([sys.executable, "-c", "from pacsnode._native import IS_NATIVE as n; print(n)"],
                                       env=servers.node_env(servers.NODE_SOURCE)),
        "pacsnode_workers": "passed" if pacsnode_has("serve", "--workers") else "option not available",
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if not a.no_netns and (code := in_private_netns(argv)) is not None:
        return code
    try:
        skipped = check_programs(a)
    except Missing as exc:
        print(f"bench: missing {exc}{' (CI=true: nothing may be skipped)' if IN_CI else ''}", file=sys.stderr)
        return 2
    wanted = set(a.workloads.split(","))
    receivers = [r for r in a.receivers.split(",") if r not in skipped]
    archives = [r for r in a.archives.split(",") if r not in skipped]
    for name, why in skipped.items():
        log(f"skipping {name}: {why}")

    shutil.rmtree(a.work, ignore_errors=True)
    logs = a.work / "logs"
    logs.mkdir(parents=True)
    log(f"pacsnode runs from a copy of the work tree: {servers.snapshot(a.work / 'pacsnode-source')}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    ctx = workloads.Context(work=a.work, logs=logs, rounds=a.rounds, settle=a.settle, workers=a.workers,
                            pacsnode_args=a.pacsnode_arg, log=log)
    results: dict = {
        "meta": {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "command": "python -m bench.run " + " ".join(argv), "smoke": a.smoke,
                 "network_namespace": os.environ.get("PACSNODE_BENCH_NETNS") == "1", **machine_facts()},
        "skipped": skipped, "corpora": {}, "problems": ctx.problems,
    }

    def save() -> None:
        with open(a.out, "w") as fh:
            json.dump(results, fh, indent=1)

    shapes = corpus.shapes(a.smoke, a.find_archive_size, a.large_mb)
    needed = set()
    if "ingest" in wanted:
        needed |= set(a.kinds.split(","))
    if "qr" in wanted:
        needed.add("ct")
    if "find" in wanted:
        needed.add("find")
    if "large" in wanted:
        needed.add("large")
    manifests = {}
    for kind in ("ct", "small", "find", "large"):
        if kind in needed:
            log(f"corpus {kind}: {shapes[kind]}")
            manifests[kind] = corpus.ensure(str(a.corpus_dir), kind, **shapes[kind])
            results["corpora"][kind] = {k: manifests[kind][k] for k in ("n_instances", "bytes", "params")}
    started = time.monotonic()
    finished = False
    try:
        if "ingest" in wanted and receivers:
            results["ingest"] = workloads.ingest(ctx, receivers, {k: manifests[k] for k in a.kinds.split(",")},
                                                 [int(n) for n in a.assoc.split(",")])
            save()
        if "qr" in wanted and archives:
            results["query_retrieve"] = workloads.query_retrieve(ctx, archives, manifests["ct"], a.find_queries)
            save()
        if "find" in wanted:
            names = ["pacsnode"] + ([n for n in archives if n != "pacsnode"] if a.find_refs else [])
            find = manifests["find"]
            results["find_archives"] = [
                {"archive": n, "instances": find["n_instances"], "studies": len(find["studies"]),
                 **workloads.guarded(ctx, f"C-FIND archive {n}", workloads.find_archive, ctx, n, find, a.find_queries)}
                for n in names
            ]
            save()
        if "large" in wanted:
            results["large"] = workloads.guarded(ctx, "large instance", workloads.large_instance, ctx,
                                                 manifests["large"])
        finished = True
    finally:
        results["meta"]["duration_s"] = round(time.monotonic() - started)
        save()
        if finished and not ctx.problems:  # otherwise the servers' logs stay for a look
            shutil.rmtree(a.work, ignore_errors=True)
    print()
    print(report.render(results))
    log(f"results in {a.out}")
    return 1 if ctx.problems else 0


if __name__ == "__main__":
    sys.exit(main())
