"""Markdown tables of a run's results, with pacsnode's ratio to each reference.

Ratios are speed ratios, > 1 when pacsnode is faster: pacsnode's instances/s over the
reference's, or the reference's latency over pacsnode's (on an archive of the same size).

  python -m bench.report bench/results/run.json
"""
from __future__ import annotations

import json
import sys

KIND_TITLE = {"ct": "CT corpus", "small": "small corpus"}


def _f(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def _med(stat: dict | None, digits: int = 0, spread: bool = True) -> str:
    if not stat:
        return "failed"
    text = _f(stat["median"], digits)
    if spread and stat["n"] > 1:
        text += f" [{_f(stat['min'], digits)}–{_f(stat['max'], digits)}]"
    return text


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "–"
    return f"{ours / theirs:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def ingest_tables(res: dict, corpora: dict) -> list[str]:
    out = []
    summary = res["summary"]
    for kind in dict.fromkeys(s["kind"] for s in summary):
        c = corpora.get(kind, {})
        each = c.get("bytes", 0) / max(1, c.get("n_instances", 1)) / 1e3
        rounds = max((s["ok_runs"] + s["failed_runs"] for s in summary), default=0)
        out.append(f"**C-STORE ingest, {KIND_TITLE.get(kind, kind)}** ({c.get('n_instances')} instances of "
                   f"{each:,.1f} KB, DCMTK storescu; median of {rounds} round(s) [min–max])\n")
        rows = []
        for s in (s for s in summary if s["kind"] == kind):
            ours = next((x for x in summary if x["receiver"] == "pacsnode" and x["kind"] == kind
                         and x["assoc"] == s["assoc"]), None)
            ratio = "–" if s["receiver"] == "pacsnode" or not ours else _ratio(
                ours["inst_per_s"] and ours["inst_per_s"]["median"], s["inst_per_s"] and s["inst_per_s"]["median"])
            rss = "–" if s["receiver"] == "durable ceiling" else _med(s["peak_rss_MB"], 0, False)
            rows.append([s["receiver"], str(s["assoc"]), _med(s["inst_per_s"]), _med(s["MB_per_s"], 1, False),
                         rss, ratio])
        out += _table(["receiver", "assoc", "instances/s", "MB/s", "peak RSS MB", "pacsnode ÷ this"], rows)
        if kind == summary[-1]["kind"] and any(s["receiver"] == "durable ceiling" for s in summary):
            out.append("\n\"durable ceiling\": no DICOM, the same bytes appended by 2 processes x 2 threads, each "
                       "append fdatasync'd before the next (`bench/disk.py`): the most any receiver that flushes "
                       "every instance before acknowledging it could reach on this disk.")
        out.append("")
    return out


def _p50(result: dict | None, kind: str = "all") -> float | None:
    return ((result or {}).get(kind) or {}).get("p50")


def find_table(archives: list[dict]) -> list[str]:
    ours = {a["instances"]: a for a in archives if a["archive"] == "pacsnode" and (a.get("find") or {}).get("all")}
    rows, notes = [], []
    for a in archives:
        f = a.get("find")
        if not f or not f.get("all"):
            rows.append([a["archive"], f"{a['instances']:,}", "failed"] + [""] * 10)
            continue
        w = f.get("socket_client") or {}
        mine = ours.get(a["instances"])
        ratios = ["–", "–"]
        if a["archive"] != "pacsnode" and mine:
            theirs_w, mine_w = _p50(w), _p50(mine["find"].get("socket_client"))
            ratios = [_ratio(f["all"]["p50"], mine["find"]["all"]["p50"]), _ratio(theirs_w, mine_w)]
        elif a["archive"] != "pacsnode":
            notes.append(f"{a['archive']} was measured on {a['instances']:,} instances only, pacsnode on "
                         f"{', '.join(f'{n:,}' for n in sorted(ours))}: no ratio.")
        load = a.get("load", {})
        rows.append([a["archive"], f"{a['instances']:,} ({a['studies']:,} studies)",
                     _f(f["all"]["p50"], 2), _f(f["all"]["p90"], 2), _f(f["all"]["p99"], 2),
                     *(_f((w.get(k) or {}).get(p), 2) for k, p in (("all", "p50"), ("all", "p90"), ("all", "p99"))),
                     " / ".join(_f(_p50(w, k), 2) for k in ("patient_id", "date_range", "name_wildcard")),
                     f"{f['wrong'] + w.get('wrong', 0)}/{f['queries'] + w.get('queries', 0)}",
                     f"{_f(load.get('inst_per_s'))} ({load.get('method', '?')})", *ratios])
    out = ["**C-FIND latency** (ms), study level, 6 return keys, 200 queries in turn by PatientID, StudyDate "
           "range and wildcard PatientName (2 to 4 matches each), inside one association: with pynetdicom "
           "(as in the anchors) and with a bare socket client (`bench/wirefind.py`: no pynetdicom floor)\n"]
    out += _table(["archive", "instances", "pynetdicom p50", "p90", "p99", "socket p50", "p90", "p99",
                   "socket p50 by ID / date / name*", "wrong", "load inst/s", "ref ÷ pacsnode p50, pynetdicom",
                   "socket"], rows)
    out += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    return out


def retrieve_table(archives: list[dict]) -> list[str]:
    ours = next((a for a in archives if a["archive"] == "pacsnode"), None)
    n = next((a[op]["instances"] for a in archives for op in ("move", "get") if a.get(op)), "?")
    out = []
    for move, get, receivers in (("move", "get", "to a DCMTK storescp writing files; getscu writing files"),
                                 ("move_discard", "get_discard", "receivers discarding the data: storescp and "
                                  "getscu `--ignore`")):
        if not any(a.get(move) or a.get(get) for a in archives):
            continue
        rows = []
        for a in archives:
            if "instances" not in a and not (a.get(move) or a.get(get)):
                continue  # a measurement of the other table only
            cells = [a["archive"]]
            measured = [op for op in (move, get) if "instances" in a or a.get(op)]  # else "–", not "failed"
            for op in (move, get):
                r = a.get(op) or {}
                cells += [_med(r.get("inst_per_s")), _med(r.get("MB_per_s"), 1, False)] if op in measured else ["–", "–"]
            for op in (move, get):
                mine = ours and (ours.get(op) or {}).get("inst_per_s")
                theirs = (a.get(op) or {}).get("inst_per_s")
                skip = a["archive"].startswith("pacsnode") or op not in measured  # ours, or another of our setups
                cells.append("–" if skip else _ratio(mine and mine["median"], theirs and theirs["median"]))
            rows.append(cells)
        out += [f"**C-MOVE** (movescu) **and C-GET** (getscu) of one {n}-instance CT study, {receivers} "
                "(median of timed runs [min–max], wall time of the DCMTK client)\n"]
        out += _table(["archive", "C-MOVE inst/s", "MB/s", "C-GET inst/s", "MB/s", "pacsnode ÷ this, move", "get"],
                      rows)
        out.append("")
    return out


def large_table(large: dict) -> list[str]:
    if "error" in large:
        return [f"**One large multi-frame instance into pacsnode**: failed ({large['error']})", ""]
    out = [f"**One large multi-frame instance into pacsnode** (goal: {large['goal']})\n"]
    out += _table(["size MB", "frames", "seconds", "MB/s", "processes", "idle RSS MB (tree)", "idle PSS MB (tree)",
                   "peak RSS MB (tree)", "peak − idle", "largest VmHWM of one process", "stored"],
                  [[_f(large["size_MB"]), str(large["frames"]), _f(large["wall_s"], 2), _f(large["MB_per_s"]),
                    str(large.get("processes", "?")), _f(large["idle_rss_MB"]), _f(large.get("idle_pss_MB")),
                    _f(large["peak_rss_MB"]), _f(large["peak_rss_MB"] - large["idle_rss_MB"]),
                    _f(large["max_process_hwm_MB"]), "yes" if large["ok"] else "NO"]])
    get = large.get("get")
    if get:
        out += ["", f"Back out by C-GET (getscu `--ignore`): {_f(get['wall_s'], 2)} s, {_f(get['MB_per_s'])} MB/s, "
                f"peak RSS {_f(get['peak_rss_MB'])} MB (tree), peak − idle {_f(get['peak_rss_MB'] - large['idle_rss_MB'])} MB, "
                f"largest VmHWM of one process {_f(get['max_process_hwm_MB'])} MB, sent: {'yes' if get['ok'] else 'NO'}"]
    return out + [""]


def render(results: dict) -> str:
    meta = results.get("meta", {})
    out = [f"Run of {meta.get('date', '?')} on {meta.get('machine', '?')}: `{meta.get('command', '?')}`", ""]
    if results.get("skipped"):
        out += [f"Skipped: {', '.join(f'{k} ({v})' for k, v in results['skipped'].items())}", ""]
    corpora = results.get("corpora", {})
    if results.get("ingest"):
        out += ingest_tables(results["ingest"], corpora)
    qr = results.get("query_retrieve") or []
    find = [a for a in qr if "instances" in a] + (results.get("find_archives") or [])
    if find:
        out += find_table(find)
    if qr:
        out += retrieve_table(qr)
    if results.get("large"):
        out += large_table(results["large"])
    if results.get("problems"):
        out += ["**Problems**", ""] + [f"- {p}" for p in results["problems"]] + [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0] if argv else "bench/results/run.json") as fh:
        print(render(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
