"""The workloads: C-STORE ingest, C-FIND latency, C-MOVE / C-GET, one large instance.

Each returns plain dicts (raw runs and summaries) for the JSON file and bench.report. Every
receiver is checked afterwards to hold exactly what was sent; a run that fails the check is
kept in the JSON with ok=false and left out of the medians.
"""
from __future__ import annotations

import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import clients, corpus, disk, procstat
from bench.servers import DcmQrScp, Orthanc, PacsNode, PyNetDicomScp, Server, StoreScp, pacsnode_has
from bench.wirefind import WireFind

MB = 1e6
# storescp accepts any called AE title: pacsnode's second name for each C-MOVE destination
# (file-writing, discarding), configured for 2 associations.
TWO_ASSOCIATIONS = {"move": "MOVEDEST2", "move_discard": "MOVENULL2"}


@dataclass
class Context:
    work: Path  # receivers' data: bulky, deleted after each run
    logs: Path
    rounds: int
    settle: float  # seconds of quiet (after a sync) before each timed run
    workers: int | None  # pacsnode serve --workers, when the node has the option
    pacsnode_args: list[str] = field(default_factory=list)  # more `pacsnode serve` options
    log: Callable[[str], None] = print
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.log(f"PROBLEM: {text}")


def summarize(values) -> dict | None:
    vals = sorted(values)
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "n": len(vals)}


def percentiles(seconds: list[float]) -> dict | None:
    """Latency percentiles in ms (nearest rank)."""
    vals = sorted(s * 1000 for s in seconds)
    if not vals:
        return None

    def pct(p: float) -> float:
        return vals[min(len(vals) - 1, max(0, round(p / 100 * len(vals) + 0.5) - 1))]

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "mean": statistics.fmean(vals), "max": vals[-1],
            "n": len(vals)}


def guarded(ctx: Context, label: str, fn: Callable, *args) -> dict:
    """``fn(*args)``; a crash (a server that does not start...) becomes a problem, not the end of the run."""
    try:
        return fn(*args)
    except Exception as exc:
        ctx.problem(f"{label}: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def held(ctx: Context, srv: Server) -> int | None:
    """How many instances the server holds, or None (and a problem) when it cannot say."""
    try:
        return srv.count()
    except Exception as exc:  # a refused association, Orthanc's REST down...
        ctx.problem(f"cannot count what {srv.name} holds: {exc}")
        return None


def settle(seconds: float) -> None:
    """Flush the previous run's dirty pages, then wait: every run starts from a quiet disk."""
    os.sync()
    time.sleep(seconds)


def precache(folders: list[str]) -> None:
    """Read the corpus once so that the sender reads from the page cache (untimed)."""
    buf = bytearray(1 << 20)
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                with open(os.path.join(dirpath, name), "rb", buffering=0) as fh:
                    while fh.readinto(buf):
                        pass


def make_receiver(name: str, ctx: Context, workdir: Path, remotes: dict[str, int | str] | None = None) -> Server:
    if name == "pacsnode":
        return PacsNode(workdir, remotes, ctx.workers, ctx.pacsnode_args)
    if name == "storescp":
        return StoreScp(workdir)
    if name == "orthanc":
        return Orthanc(workdir, remotes)
    if name == "pynetdicom":
        return PyNetDicomScp(workdir)
    if name == "dcmqrscp":
        return DcmQrScp(workdir, remotes)
    raise ValueError(name)


# -- (1) C-STORE ingest ---------------------------------------------------------------------


def ingest(ctx: Context, receivers: list[str], corpora: dict[str, dict], assocs: list[int]) -> dict:
    """Rounds of every (corpus, associations, receiver), receivers interleaved inside a round
    so that the machine's drift (other users) hits them alike; with 4 associations, each round
    also measures the disk's durable-write ceiling for the corpus (bench/disk.py)."""
    runs = []
    for rnd in range(1, ctx.rounds + 1):
        for kind, manifest in corpora.items():
            for nassoc in assocs:
                for name in receivers:
                    rec = guarded(ctx, f"ingest {name}-{kind}-a{nassoc}-r{rnd}", ingest_once,
                                  ctx, name, manifest, nassoc, rnd)
                    runs.append({"receiver": name, "kind": kind, "assoc": nassoc, "round": rnd, "ok": False, **rec})
            if 4 not in assocs:
                continue
            ceiling = disk.durable_ceiling(ctx.work / "disk", manifest["n_instances"],
                                           manifest["bytes"] // manifest["n_instances"])
            ctx.log(f"durable append ceiling {kind}-r{rnd}: {ceiling['inst_per_s']:.0f} inst/s, "
                    f"{ceiling['MB_per_s']:.0f} MB/s")
            runs.append({"receiver": "durable ceiling", "kind": kind, "assoc": 4, "round": rnd, **ceiling})
    summary = []
    for kind in corpora:
        for nassoc in assocs:
            for name in receivers + (["durable ceiling"] if nassoc == 4 else []):
                mine = [r for r in runs if (r["receiver"], r["kind"], r["assoc"]) == (name, kind, nassoc)]
                good = [r for r in mine if r["ok"]]
                summary.append({
                    "receiver": name, "kind": kind, "assoc": nassoc,
                    "inst_per_s": summarize(r["inst_per_s"] for r in good),
                    "MB_per_s": summarize(r["MB_per_s"] for r in good),
                    "peak_rss_MB": summarize(r["peak_rss_MB"] for r in good if "peak_rss_MB" in r),
                    "ok_runs": len(good), "failed_runs": len(mine) - len(good),
                })
    return {"runs": runs, "summary": summary}


def ingest_once(ctx: Context, name: str, manifest: dict, nassoc: int, rnd: int) -> dict:
    kind = manifest["kind"]
    tag = f"{name}-{kind}-a{nassoc}-r{rnd}"
    dirs = corpus.study_dirs(manifest)
    precache(dirs)
    srv = make_receiver(name, ctx, ctx.work / tag).start()
    try:
        settle(ctx.settle)
        idle = procstat.tree_rss(srv.pid)
        with procstat.PeakRss(srv.pid) as peak:
            wall, codes = clients.run_storescu(srv.aet, srv.port, clients.split(dirs, nassoc), ctx.logs, tag)
        stored = held(ctx, srv)
    finally:
        srv.stop(clean=True)
    n, nbytes = manifest["n_instances"], manifest["bytes"]
    ok = stored == n and all(c == 0 for c in codes)
    rec = {"receiver": name, "kind": kind, "assoc": nassoc, "round": rnd, "wall_s": wall,
           "inst_per_s": n / wall, "MB_per_s": nbytes / wall / MB, "expected": n, "stored": stored,
           "storescu_rc": codes, "idle_rss_MB": idle / MB, "peak_rss_MB": peak.peak / MB, "ok": ok}
    ctx.log(f"ingest {tag}: {wall:.2f} s, {rec['inst_per_s']:.0f} inst/s, {rec['MB_per_s']:.1f} MB/s, "
            f"peak RSS {rec['peak_rss_MB']:.0f} MB, stored {stored}/{n}{'' if ok else ' FAILED'}")
    if not ok:
        ctx.problem(f"ingest {tag}: stored {stored} of {n}, storescu exit codes {codes} (logs in {ctx.logs})")
    return rec


# -- (2) C-FIND latency ---------------------------------------------------------------------


def make_queries(manifest: dict, count: int) -> list[dict]:
    """Study-level queries in turn by Patient ID, by a Study Date range, by a wildcard Patient
    Name; spread over the archive, each with the number of studies it must match."""
    studies = manifest["studies"]
    pids = sorted({s["patient_id"] for s in studies})
    dates = sorted({s["study_date"] for s in studies})
    names = sorted({s["patient_name"].split("^")[0] for s in studies})
    queries = []
    for i in range(count):
        j = i // 3 * 7919  # a prime stride: consecutive queries hit distant parts of the index
        kind = ("patient_id", "date_range", "name_wildcard")[i % 3]
        if kind == "patient_id":
            pid = pids[j % len(pids)]
            keys, expected = {"PatientID": pid}, sum(s["patient_id"] == pid for s in studies)
        elif kind == "date_range":
            lo = dates[j % max(1, len(dates) - 1)]
            hi = dates[min(len(dates) - 1, dates.index(lo) + 1)]
            keys, expected = {"StudyDate": f"{lo}-{hi}"}, sum(lo <= s["study_date"] <= hi for s in studies)
        else:
            last = names[j % len(names)]
            keys = {"PatientName": f"{last}*"}
            expected = sum(s["patient_name"].startswith(last) for s in studies)
        queries.append({"kind": kind, "keys": keys, "expected": expected})
    return queries


def run_queries(ctx: Context, srv: Server, queries: list[dict], label: str, warmup: int = 10) -> dict:
    """All queries inside one association, after ``warmup`` untimed ones; every match count checked.

    Twice: with pynetdicom (the brief's client, as in the anchors) and with a bare socket
    client (bench.wirefind), whose figure is the server's latency without pynetdicom's floor."""
    pyn = _query_pass(ctx, srv, queries, warmup, lambda: clients.FindSession(clients.HOST, srv.port, srv.aet),
                      lambda s, keys: (lambda t, m, f: (t, len(m), f))(*s.find(keys)))
    wire = _query_pass(ctx, srv, queries, warmup, lambda: WireFind(clients.HOST, srv.port, srv.aet),
                       lambda s, keys: s.find(keys, clients.RETURN_KEYS))
    res = {**pyn, "socket_client": wire}
    for name, r in (("pynetdicom", pyn), ("socket", wire)):
        a = r["all"]
        ctx.log(f"C-FIND {label}, {name} client: p50 {a['p50']:.2f} ms, p90 {a['p90']:.2f}, p99 {a['p99']:.2f}, "
                f"{r['wrong']} wrong of {r['queries']}")
        if r["wrong"]:
            ctx.problem(f"C-FIND {label}, {name} client: {r['wrong']} queries with a wrong answer, "
                        f"e.g. {r['wrong_examples'][0]}")
    return res


def _query_pass(ctx: Context, srv: Server, queries: list[dict], warmup: int, connect, find) -> dict:
    lat: dict[str, list[float]] = {}
    bad = []
    with connect() as session:
        for q in queries[:warmup]:
            find(session, q["keys"])
        for q in queries:
            seconds, matches, final = find(session, q["keys"])
            lat.setdefault(q["kind"], []).append(seconds)
            if final != 0x0000 or matches != q["expected"]:
                bad.append({"keys": q["keys"], "expected": q["expected"], "got": matches, "status": final})
    every = [s for v in lat.values() for s in v]
    return {"all": percentiles(every), **{k: percentiles(v) for k, v in lat.items()},
            "queries": len(every), "wrong": len(bad), "wrong_examples": bad[:5]}


def load_archive(ctx: Context, srv: Server, manifest: dict, nassoc: int, tag: str) -> dict:
    """Fill an archive by C-STORE (timed: that archive's load rate) and check it holds all."""
    dirs = corpus.study_dirs(manifest)
    precache(dirs)
    wall, codes = clients.run_storescu(srv.aet, srv.port, clients.split(dirs, nassoc), ctx.logs, tag)
    stored = held(ctx, srv)
    n = manifest["n_instances"]
    ok = stored == n and all(c == 0 for c in codes)
    ctx.log(f"load {tag}: {n} instances by C-STORE ({nassoc} assoc) in {wall:.1f} s = {n / wall:.0f} inst/s, "
            f"stored {stored}{'' if ok else ' FAILED'}")
    if not ok:
        ctx.problem(f"load {tag}: stored {stored} of {n}, storescu exit codes {codes}")
    return {"method": f"C-STORE, {nassoc} storescu", "wall_s": wall, "inst_per_s": n / wall, "stored": stored,
            "expected": n, "ok": ok}


# -- (3) C-MOVE and C-GET -------------------------------------------------------------------


def retrieve(ctx: Context, srv: Server, manifest: dict, dest: StoreScp, op: str, move_to: str | None = None) -> dict:
    """One warm-up then ``rounds`` timed retrievals of a whole study, a different one each time.

    With a discarding ``dest`` (C-MOVE) or getscu ``--ignore`` (C-GET, when ``dest.discard``)
    nothing is written on the receiving side: the count is the completed sub-operations the
    client reports. ``move_to``: another AE title the archive knows ``dest`` by (other options)."""
    aet = move_to or dest.aet
    studies = manifest["studies"]
    first = 0 if op == "move" else ctx.rounds + 1
    runs = []
    for k in range(ctx.rounds + 1):
        study = studies[(first + k) % len(studies)]
        if op == "move":
            if not dest.discard:
                dest.clear()
            settle(min(ctx.settle, 1.0))
            wall, proc = clients.movescu(srv.aet, srv.port, aet, study["study_uid"])
            got = clients.completed_suboperations(op, proc, study["n"]) if dest.discard else dest.count()
        elif dest.discard:
            settle(min(ctx.settle, 1.0))
            wall, proc = clients.getscu(srv.aet, srv.port, study["study_uid"], None)
            got = clients.completed_suboperations(op, proc, study["n"])
        else:
            out = ctx.work / f"getscu-{srv.name}-{k}"
            out.mkdir(parents=True)
            settle(min(ctx.settle, 1.0))
            wall, proc = clients.getscu(srv.aet, srv.port, study["study_uid"], out)
            got = sum(1 for _ in out.iterdir())
            shutil.rmtree(out)
        ok = proc.returncode == 0 and got == study["n"]
        runs.append({"warmup": k == 0, "wall_s": wall, "inst_per_s": study["n"] / wall,
                     "MB_per_s": study["bytes"] / wall / MB, "received": got, "expected": study["n"], "ok": ok})
        ctx.log(f"C-{op.upper()} {srv.name}{f' to {aet}' if move_to else ''}{' (discarded)' if dest.discard else ''}"
                f"{' (warm-up)' if k == 0 else ''}: {wall:.2f} s, "
                f"{study['n'] / wall:.0f} inst/s, received {got}/{study['n']}{'' if ok else ' FAILED'}")
        if not ok:
            ctx.problem(f"C-{op.upper()} from {srv.name} to {aet}: received {got} of {study['n']}, exit "
                        f"{proc.returncode}: {(proc.stdout + proc.stderr)[-400:]}")
    good = [r for r in runs if r["ok"] and not r["warmup"]]
    return {"runs": runs, "instances": studies[first % len(studies)]["n"],
            "inst_per_s": summarize(r["inst_per_s"] for r in good),
            "MB_per_s": summarize(r["MB_per_s"] for r in good), "ok_runs": len(good),
            "failed_runs": sum(not r["ok"] for r in runs if not r["warmup"])}


def reference_sender(ctx: Context, manifest: dict, receiver: StoreScp, processes: int = 1) -> dict:
    """The same study sent by storescu from its files to the same storescp a C-MOVE goes to,
    timed like movescu (process start included): DCMTK's own sender into the same receiver,
    for scale; over one association, or ``processes`` storescu at once, each with a share."""
    label = ("storescp --ignore" if receiver.discard else "storescp writing files") + f", {processes} storescu"
    runs = []
    for k in range(ctx.rounds + 1):
        study = manifest["studies"][k % len(manifest["studies"])]
        if not receiver.discard:
            receiver.clear()
        settle(min(ctx.settle, 1.0))
        folder = os.path.join(manifest["root"], study["dir"])
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
        wall, codes = clients.run_storescu(receiver.aet, receiver.port, clients.split(files, processes),
                                           ctx.logs, f"reference-sender-{processes}-{k}")
        ok = codes == [0] * processes and (receiver.discard or receiver.count() == study["n"])
        runs.append({"warmup": k == 0, "wall_s": wall, "inst_per_s": study["n"] / wall,
                     "MB_per_s": study["bytes"] / wall / MB, "ok": ok})
        ctx.log(f"storescu to {label}{' (warm-up)' if k == 0 else ''}: {wall:.2f} s, "
                f"{study['n'] / wall:.0f} inst/s{'' if ok else ' FAILED'}")
        if not ok:
            ctx.problem(f"storescu to {label}: exit codes {codes}")
    good = [r for r in runs if r["ok"] and not r["warmup"]]
    return {"runs": runs, "instances": manifest["studies"][0]["n"], "inst_per_s": summarize(r["inst_per_s"] for r in good),
            "MB_per_s": summarize(r["MB_per_s"] for r in good), "ok_runs": len(good)}


def query_retrieve(ctx: Context, archives: list[str], ct: dict, nqueries: int) -> list[dict]:
    """Per archive, on the CT corpus: load it, C-FIND, C-MOVE to a storescp, C-GET by getscu;
    then both again with receivers that discard what they get (the sender's own speed)."""
    dest = StoreScp(ctx.work / "movedest", aet="MOVEDEST").start()
    null = StoreScp(ctx.work / "movenull", aet="MOVENULL", discard=True).start()
    out = []
    try:
        queries = make_queries(ct, nqueries)
        for name in archives:
            res = {"archive": name, "instances": ct["n_instances"], "studies": len(ct["studies"]), "corpus": "ct"}
            res.update(guarded(ctx, f"query/retrieve on {name}", _query_retrieve_one, ctx, name, ct, queries, dest, null))
            out.append(res)
            if "two_associations" in res:
                out.append({"archive": "pacsnode, 2 associations to the destination", **res.pop("two_associations")})
        out.append({"archive": "storescu sending the files", "move": reference_sender(ctx, ct, dest),
                    "move_discard": reference_sender(ctx, ct, null)})
        out.append({"archive": "storescu sending the files, 2 processes at once", "move": reference_sender(ctx, ct, dest, 2),
                    "move_discard": reference_sender(ctx, ct, null, 2)})
    finally:
        dest.stop(clean=True)
        null.stop(clean=True)
    return out


def _query_retrieve_one(ctx: Context, name: str, ct: dict, queries: list[dict], dest: StoreScp, null: StoreScp) -> dict:
    peers: dict[str, int | str] = {dest.aet: dest.port, null.aet: null.port}
    # pacsnode knows the file-writing storescp a second time, to C-MOVE there over 2 associations.
    two_associations = name == "pacsnode" and pacsnode_has("serve", "associations=N")
    if two_associations:
        for receiver, aet in zip((dest, null), TWO_ASSOCIATIONS.values()):
            peers[aet] = f"{receiver.port};associations=2"
    srv = make_receiver(name, ctx, ctx.work / f"qr-{name}", peers).start()
    try:
        settle(ctx.settle)
        res = {"load": load_archive(ctx, srv, ct, 1, f"qr-{name}")}
        res["find"] = run_queries(ctx, srv, queries, f"{name} ({ct['n_instances']} instances)")
        res["move"] = retrieve(ctx, srv, ct, dest, "move")
        res["get"] = retrieve(ctx, srv, ct, dest, "get")
        res["move_discard"] = retrieve(ctx, srv, ct, null, "move")
        res["get_discard"] = retrieve(ctx, srv, ct, null, "get")
        if two_associations:
            res["two_associations"] = {
                key: retrieve(ctx, srv, ct, receiver, "move", TWO_ASSOCIATIONS[key])
                for key, receiver in (("move", dest), ("move_discard", null))
            }
        return res
    finally:
        srv.stop(clean=True)


def find_archive(ctx: Context, name: str, manifest: dict, nqueries: int) -> dict:
    """C-FIND on the large find corpus: bulk-loaded by `pacsnode import` when the node has it,
    else by C-STORE from 4 storescu processes."""
    workdir = ctx.work / f"find-{name}"
    res = {"archive": name, "instances": manifest["n_instances"], "studies": len(manifest["studies"]),
           "corpus": "find"}
    dirs = corpus.study_dirs(manifest)
    srv = make_receiver(name, ctx, workdir)
    if isinstance(srv, DcmQrScp):
        srv.max_studies = len(manifest["studies"]) + 10
    if isinstance(srv, PacsNode) and pacsnode_has("import"):
        t0 = time.perf_counter()
        proc = srv.import_folders(dirs)
        wall = time.perf_counter() - t0
        if proc.returncode == 0:
            srv.start(keep_data=True)
            stored = held(ctx, srv)
            ok = stored == manifest["n_instances"]
            res["load"] = {"method": "pacsnode import", "wall_s": wall, "inst_per_s": manifest["n_instances"] / wall,
                           "stored": stored, "expected": manifest["n_instances"], "ok": ok}
            ctx.log(f"load find-{name}: pacsnode import of {manifest['n_instances']} in {wall:.1f} s, stored {stored}")
            if not ok:
                ctx.problem(f"pacsnode import: stored {stored} of {manifest['n_instances']}")
        else:
            ctx.problem(f"pacsnode import failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-400:]}; "
                        "loading by C-STORE instead")
    try:
        if srv.proc is None:
            srv.start()
            settle(ctx.settle)
            res["load"] = load_archive(ctx, srv, manifest, 4, f"find-{name}")
        res["find"] = run_queries(ctx, srv, make_queries(manifest, nqueries),
                                  f"{name} ({manifest['n_instances']} instances)")
    finally:
        srv.stop(clean=True)
    return res


# -- (4) one large multi-frame instance into pacsnode ---------------------------------------


def large_instance(ctx: Context, manifest: dict) -> dict:
    node = make_receiver("pacsnode", ctx, ctx.work / "large-pacsnode").start()
    try:
        settle(ctx.settle)
        idle, idle_pss = procstat.tree_rss(node.pid), procstat.tree_pss(node.pid)
        nprocs = len(procstat.tree(node.pid))
        with procstat.PeakRss(node.pid, interval=0.01) as peak:
            wall, codes = clients.run_storescu(node.aet, node.port, [corpus.study_dirs(manifest)], ctx.logs, "large")
        stored = held(ctx, node)
        # And back out: C-GET of it by getscu discarding what it receives.
        with procstat.PeakRss(node.pid, interval=0.01) as get_peak:
            get_wall, got = clients.getscu(node.aet, node.port, manifest["studies"][0]["study_uid"], None)
        sent = clients.completed_suboperations("get", got, 1)
    finally:
        node.stop(clean=True)
    size = manifest["bytes"]
    ok = stored == 1 and codes == [0]
    res = {"size_MB": size / MB, "frames": manifest.get("frames"), "wall_s": wall, "MB_per_s": size / wall / MB,
           "idle_rss_MB": idle / MB, "idle_pss_MB": idle_pss / MB, "peak_rss_MB": peak.peak / MB,
           "processes": nprocs, "max_process_hwm_MB": peak.max_hwm / MB,
           "goal": "peak RSS < 200 MB for a 1 GB instance", "stored": stored, "ok": ok,
           "get": {"wall_s": get_wall, "MB_per_s": size / get_wall / MB, "peak_rss_MB": get_peak.peak / MB,
                   "max_process_hwm_MB": get_peak.max_hwm / MB, "sent": sent, "ok": sent == 1}}
    ctx.log(f"large instance {size / MB:.0f} MB into pacsnode: {wall:.1f} s, {res['MB_per_s']:.0f} MB/s, "
            f"RSS idle {res['idle_rss_MB']:.0f} MB, peak {res['peak_rss_MB']:.0f} MB "
            f"(largest VmHWM of one process {res['max_process_hwm_MB']:.0f})")
    ctx.log(f"large instance back by C-GET: {get_wall:.1f} s, peak RSS {res['get']['peak_rss_MB']:.0f} MB")
    if not ok:
        ctx.problem(f"large instance: stored {stored}, storescu exit codes {codes}")
    if sent != 1:
        ctx.problem(f"large instance: C-GET sent {sent}: {(got.stdout + got.stderr)[-400:]}")
    return res
