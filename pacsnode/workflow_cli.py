"""The platform commands of the CLI: `pacsnode reconcile` and `pacsnode appliance`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMMANDS = ("reconcile", "appliance")


def add_commands(sub) -> None:
    rec = sub.add_parser(
        "reconcile", help="the reconciliation view: mismatched and unmatched studies, and fixing them",
        description="List reconciliation items (default: the open ones), show one, resolve one, or read the audit log. "
        "Works on the data folder, also while `serve` runs.",
    )
    rec.add_argument("action", nargs="?", default="list", choices=["list", "show", "resolve", "audit"])
    rec.add_argument("item", nargs="?", help="item id (show, resolve)")
    rec.add_argument("--data", type=Path, help="data folder (default ./data)")
    rec.add_argument("--config", type=Path, help="TOML file with the same keys as `serve`")
    rec.add_argument("--state", default="open", choices=["open", "resolved", "all"], help="list: which items (default open)")
    rec.add_argument("--link", metavar="ACCESSION", help="resolve: take the identity of this order")
    rec.add_argument("--set", action="append", metavar="KEYWORD=VALUE", help="resolve: correct an attribute (PatientID, PatientName, ...); repeatable")
    rec.add_argument("--accept", action="store_true", help="resolve: accept the study as received")
    rec.add_argument("--reason", default="", help="resolve: why (kept in the audit log)")
    rec.add_argument("--by", default="", help="resolve: who (default: cli and the user name)")
    rec.add_argument("--study", help="audit: one study's entries")
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    from pacsnode.appliance import add_options

    app = sub.add_parser(
        "appliance", help="run PACS and RIS together on embedded defaults (one data folder)",
        description="Starts `pacsnode serve` and `risnode serve` wired to each other on loopback: HL7 feed from the "
        "RIS, MPPS forwarding and Instance Availability Notification from the PACS, worklist look-ups. "
        "Prints the ports and AE titles; stops both on SIGINT/SIGTERM.",
    )
    add_options(app)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "appliance":
        from pacsnode.appliance import run_appliance

        return run_appliance(parser, args)
    return _reconcile(parser, args)


def _reconcile(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import getpass
    import logging

    from pacsnode.cli import build_config
    from pacsnode.config import ConfigError
    from pacsnode.errors import PacsError
    from pacsnode.services.archive import Archive
    from pacsnode.services.reconcile import ReconciliationService

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(args)
    except ConfigError as exc:
        parser.exit(2, f"pacsnode: error: {exc}\n")
    if args.action in ("show", "resolve") and not args.item:
        parser.exit(2, f"pacsnode: error: reconcile {args.action}: give the item id\n")
    if not (config.data / "index" / "data.mdb").exists():
        print(f"pacsnode: error: no archive in {config.data}: fix --data", file=sys.stderr)
        return 1
    archive = Archive.open(config)
    try:
        service = ReconciliationService(archive)
        if args.action == "list":
            _print(args, service.items(args.state), _item_line)
        elif args.action == "show":
            item = service.item(args.item)
            item["audit"] = [e for e in service.audit_log(item["study_uid"]) if e.get("item") == item["id"]]
            _print(args, item, _item_text)
        elif args.action == "audit":
            _print(args, service.audit_log(args.study), _audit_line)
        else:
            chosen = [name for name, on in (("link", args.link), ("correct", args.set), ("accept", args.accept)) if on]
            if len(chosen) != 1:
                parser.exit(2, "pacsnode: error: reconcile resolve: give exactly one of --link, --set, --accept\n")
            identity = {}
            for pair in args.set or []:
                key, sep, value = pair.partition("=")
                if not sep:
                    parser.exit(2, f"pacsnode: error: --set {pair!r}: expected KEYWORD=VALUE\n")
                identity[key.strip()] = value
            item = service.resolve(
                args.item, chosen[0], accession=args.link or "", identity=identity, reason=args.reason,
                by=args.by or f"cli {getpass.getuser()}",
            )
            _print(args, item, _item_text)
    except PacsError as exc:
        print(f"pacsnode: error: {exc}", file=sys.stderr)
        return 1
    finally:
        archive.close()
    return 0


def _print(args: argparse.Namespace, data, text) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif isinstance(data, list):
        for entry in data:
            print(text(entry))
    else:
        print(text(data))


def _item_line(item: dict) -> str:
    received, expected = item.get("received") or {}, item.get("expected") or {}
    who = received.get("PatientID", "")
    if expected and expected.get("PatientID") != who:
        who += f" -> {expected.get('PatientID')}"
    differences = ",".join(item.get("differences") or []) or "-"
    return (
        f"{item['id'].lstrip('0') or '0':>5} {item['kind']:<9} {item['state']:<8} acc {received.get('AccessionNumber') or '-':<16} "
        f"order {item.get('order') or '-':<16} patient {who:<20} differs {differences:<30} "
        f"instances {item['instances']} quarantined {item['quarantined']}"
    )


def _item_text(item: dict) -> str:
    lines = [_item_line(item), f"  study {item['study_uid']}  from {item.get('source_ae') or '?'}  first {item['created']}  last {item['last_seen']}"]
    for key, value in (item.get("received") or {}).items():
        want = (item.get("expected") or {}).get(key)
        mark = "" if want in (None, "", value) else f"   (order: {want})"
        lines.append(f"  {key:<17} {value}{mark}")
    if item.get("resolution"):
        r = item["resolution"]
        lines.append(f"  resolved: {r.get('action')} by {r.get('by')} at {r.get('at')} {r.get('reason') or ''}".rstrip())
    for entry in item.get("audit", []):
        lines.append("  " + _audit_line(entry))
    return "\n".join(lines)


def _audit_line(entry: dict) -> str:
    changes = ", ".join(f"{k}: {entry['old'].get(k, '')!r} -> {v!r}" for k, v in entry["new"].items())
    return f"{entry['at']} {entry['action']:<20} {entry['by']:<24} {entry['instances']} instance(s) {changes} {entry.get('reason') or ''}".rstrip()
