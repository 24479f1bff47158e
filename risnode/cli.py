"""risnode command line: `risnode serve`, and read-only views of a data folder."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from risnode import __version__
from risnode.config import COMPLETION_POLICIES, RisConfig, build, load_toml
from risnode.errors import ConfigError, RisError

# Long options of `serve` that map to RisConfig fields of the same name.
_SERVE_KEYS = ("data", "host", "hl7_port", "ae_title", "port", "http_port", "ehr", "billing", "pacs_hl7", "accession_pattern",
               "completion_policy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="risnode", description="The radiology front office: orders, worklist, MPPS, results (RIS node).")
    parser.add_argument("--version", action="version", version=f"risnode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the RIS in the foreground (HL7 MLLP, DICOM MWL/MPPS, HTTP)")
    serve.add_argument("--config", type=Path, help="TOML file with the same keys as the long options, and [schedule.MODALITY] tables")
    serve.add_argument("--data", type=Path, help="data folder (default ./data/ris)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--hl7-port", type=int, help="HL7 MLLP port (default 2575)")
    serve.add_argument("--ae-title", help="our AE title (default RISNODE)")
    serve.add_argument("--port", type=int, help="DICOM port (default 11113)")
    serve.add_argument("--http-port", type=int, help="REST API and front-desk page port (default 8043)")
    serve.add_argument("--ehr", metavar="HOST:PORT", help="where ORU^R01 results go (MLLP)")
    serve.add_argument("--billing", metavar="HOST:PORT", help="where DFT^P03 charges go (default: the EHR)")
    serve.add_argument("--pacs-hl7", metavar="HOST:PORT", help="the PACS's HL7 port: orders (OMI^O23) and ADT A08/A40 go there")
    serve.add_argument("--station", action="append", metavar="MODALITY=AET", help="Scheduled Station AE Title of a modality; repeatable")
    serve.add_argument("--accession-pattern", help="e.g. {YY}{MM}{DD}{SEQ:5} (the default)")
    serve.add_argument("--mwl-match-calling-aet", action="store_true", default=None,
                       help="a worklist query without Scheduled Station AE Title gets the calling AE title's steps")
    serve.add_argument("--completion-policy", choices=COMPLETION_POLICIES,
                       help="who marks an exam complete (default standalone: MPPS COMPLETED; pacs: the PACS's notification)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def reader(name: str, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help)
        cmd.add_argument("--data", type=Path, default=Path("./data/ris"), help="data folder (default ./data/ris)")
        cmd.add_argument("--json", action="store_true", help="print JSON")
        return cmd

    orders = reader("orders", "list orders")
    orders.add_argument("--status")
    orders.add_argument("--date", help="YYYY-MM-DD, YYYYMMDD or today")
    orders.add_argument("--modality")
    reader("order", "one order with its timeline").add_argument("accession")
    reader("patient", "one patient").add_argument("patient_id")
    outbound = reader("outbound", "the outbound message queue")
    outbound.add_argument("--state", choices=["pending", "acked"])
    return parser


def build_config(args: argparse.Namespace) -> RisConfig:
    values: dict = load_toml(args.config) if args.config else {}
    for key in _SERVE_KEYS:
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.mwl_match_calling_aet:
        values["mwl_match_calling_aet"] = True
    if args.station:
        values["station"] = list(values.get("station", [])) + args.station
    return build(values)


def _read(args: argparse.Namespace) -> int:
    from risnode.services.ris import Ris
    from risnode.store import Store
    from risnode.web.api import order_json

    store = Store(args.data, readonly=True)
    ris = Ris(RisConfig(data=args.data), store)
    try:
        if args.command == "orders":
            rows = ris.orders(args.status, args.date, args.modality)
            _print(args, [order_json(o, p) for o, p in rows], _order_line)
        elif args.command == "order":
            _print(args, order_json(*ris.order(args.accession)), _order_text)
        elif args.command == "patient":
            _print(args, ris.patient(args.patient_id).to_dict(), lambda p: json.dumps(p, indent=2, ensure_ascii=False))
        else:
            _print(args, [m.summary() for m in ris.outbound(args.state)], _outbound_line)
    finally:
        store.close()
    return 0


def _print(args: argparse.Namespace, data, text) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif isinstance(data, list):
        for item in data:
            print(text(item))
    else:
        print(text(data))


def _order_line(o: dict) -> str:
    return f"{o['accession']:<16} {o['status']:<13} {o['scheduled']:<19} {o['modality']:<4} {o['patient']['id']:<12} {o['procedure'].get('meaning', '')}"


def _order_text(o: dict) -> str:
    lines = [_order_line(o), f"patient {o['patient']['name']}  study {o['study_uid']}  station {o['station_ae'] or '-'}"]
    lines += [f"  {e['at']}  {e['status']:<13} {e['event']:<20} {e['source']}  {e.get('note', '')}".rstrip() for e in o["timeline"]]
    return "\n".join(lines)


def _outbound_line(m: dict) -> str:
    return f"{m['id']:>6} {m['role']:<8} {m['kind']:<8} {m['control_id']:<22} {m['accession']:<16} {m['state']:<8} attempts {m['attempts']} {m['last_error']}"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command != "serve":
        try:
            return _read(args)
        except (ConfigError, RisError) as exc:
            print(f"risnode: error: {exc}", file=sys.stderr)
            return 1
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pynetdicom logs every PDU at INFO; keep its warnings and errors only.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        config = build_config(args)
    except ConfigError as exc:
        parser.exit(2, f"risnode: error: {exc}\n")
    from risnode.server import PortInUseError, serve

    try:
        serve(config)
    except PortInUseError as exc:
        print(f"risnode: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
