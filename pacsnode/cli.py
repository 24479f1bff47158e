"""pacsnode command line: `pacsnode serve`, options or a TOML config file."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

# The node does no linear algebra: OpenBLAS's threads (one per core, started when numpy
# loads) would only compete with the DICOM workers. Set before anything imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pacsnode import __version__, workflow_cli
from pacsnode.config import (
    DUPLICATE_POLICIES, IDENTITY_POLICIES, MAX_ASSOCIATIONS, REMOTE_OPTIONS, ConfigError, NodeConfig, Remote, load_toml,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacsnode", description="A high-throughput DICOM archive (PACS node).")
    parser.add_argument("--version", action="version", version=f"pacsnode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the DICOM node in the foreground")
    serve.add_argument("--config", type=Path, help="TOML file with the same keys as the long options")
    serve.add_argument("--data", type=Path, help="data folder (default ./data)")
    serve.add_argument("--ae-title", help="our AE title (default PACSNODE)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="DICOM port (default 11112)")
    serve.add_argument("--http-port", type=int, help="DICOMweb and viewer HTTP port (default 8042; 0: no HTTP)")
    serve.add_argument(
        "--remote", action="append", metavar="AET=HOST:PORT" + REMOTE_OPTIONS,
        help=f"a peer we may send to (C-MOVE); with ;associations=N (1 to {MAX_ASSOCIATIONS}, default 1) a C-MOVE "
        "there goes over N associations at once; repeatable",
    )
    serve.add_argument("--workers", type=int, help="worker processes (default: the number of cores)")
    serve.add_argument(
        "--no-fast-path", dest="fast_path", action="store_const", const=False,
        help="serve storage associations with pynetdicom too (slower; for comparison)",
    )
    serve.add_argument("--duplicate-policy", choices=DUPLICATE_POLICIES, help="a known SOP Instance UID with other content (default reject)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _platform_options(serve)
    imp = sub.add_parser("import", help="load DICOM files, folders or a DICOMDIR into the archive")
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument("--data", type=Path, help="data folder (default ./data)")
    imp.add_argument("--config", type=Path, help="TOML file with the same keys as `serve`")
    imp.add_argument("--jobs", type=int, default=8, help="files read and scanned in parallel (default 8)")
    imp.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub.add_parser("conformance", help="print the DICOM Conformance Statement (docs/conformance.md)")
    viewer = sub.add_parser("viewer", help="the OHIF web viewer served at /viewer")
    viewer_sub = viewer.add_subparsers(dest="viewer_command", metavar="ACTION")
    vinstall = viewer_sub.add_parser("install", help="fetch the pinned OHIF viewer with npm and install it")
    vinstall.add_argument("--data", type=Path, help="data folder; the viewer goes to DATA/viewer (default ./data)")
    vinstall.add_argument("--dir", type=Path, help="install here instead (serve finds it through $PACSNODE_VIEWER_DIR)")
    vinstall.add_argument("--version", dest="ohif_version", help="@ohif/app version (default: the tested pin)")
    workflow_cli.add_commands(sub)
    return parser


def _platform_options(serve: argparse.ArgumentParser) -> None:
    """The options that join the node to a RIS (docs/platform.md)."""
    group = serve.add_argument_group("the RIS side")
    group.add_argument("--hl7-port", type=int, help="MLLP port for the RIS's ADT/ORM feed (default: none)")
    group.add_argument("--identity-policy", choices=IDENTITY_POLICIES, help="an instance contradicting its order (default quarantine)")
    group.add_argument("--worklist", metavar="AET=HOST:PORT", help="the RIS's worklist, asked about unknown accession numbers")
    group.add_argument("--ian", action="append", metavar="AET=HOST:PORT", help="an Instance Availability Notification subscriber; repeatable")
    group.add_argument("--mpps-forward", action="append", metavar="AET=HOST:PORT", help="forward MPPS N-CREATE/N-SET there; repeatable")
    group.add_argument("--study-stable-seconds", type=float, help="without MPPS, a study is complete after this quiet time (default 60)")


def _platform_values(values: dict, args: argparse.Namespace) -> None:
    for key in ("hl7_port", "identity_policy", "study_stable_seconds"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    for key in ("ian", "mpps_forward"):
        listed = list(values.get(key, []) or []) + (getattr(args, key, None) or [])
        values[key] = tuple(Remote.parse(r, options=False) for r in listed)
    worklist = getattr(args, "worklist", None) or values.get("worklist")
    values["worklist"] = Remote.parse(worklist, options=False) if worklist else None


def build_config(args: argparse.Namespace) -> NodeConfig:
    values: dict = load_toml(args.config) if args.config else {}
    _platform_values(values, args)
    remotes = list(values.pop("remote", []) or [])
    for key in ("data", "ae_title", "host", "port", "http_port", "duplicate_policy", "workers", "fast_path"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    remotes += getattr(args, "remote", None) or []
    if "data" in values:
        values["data"] = Path(values["data"])
    values["remotes"] = tuple(Remote.parse(r) for r in remotes)
    try:
        return NodeConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "conformance":
        from pacsnode.conformance import render

        print(render(), end="")
        return 0
    if args.command == "viewer":
        return _viewer(parser, args)
    if args.command in workflow_cli.COMMANDS:
        return workflow_cli.run(parser, args)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pynetdicom logs every PDU at INFO; keep its warnings and errors only.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        config = build_config(args)
    except ConfigError as exc:
        parser.exit(2, f"pacsnode: error: {exc}\n")
    if args.command == "import":
        return _import(config, args)
    if args.command == "serve":
        from pacsnode.dimse.server import PortInUseError, serve

        explicit_http = args.http_port is not None or (
            args.config is not None and "http_port" in load_toml(args.config)
        )
        try:
            serve(config, http_required=explicit_http)
        except PortInUseError as exc:
            print(f"pacsnode: error: {exc}", file=sys.stderr)
            return 1
    return 0


def _viewer(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pacsnode.web.viewer import OHIF_VERSION, ViewerInstallError, default_dir, install

    if args.viewer_command != "install":
        parser.exit(2, "pacsnode: error: viewer: use `pacsnode viewer install`\n")
    target = args.dir or default_dir(args.data or NodeConfig().data)
    try:
        install(target, args.ohif_version or OHIF_VERSION)
    except ViewerInstallError as exc:
        print(f"pacsnode: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _import(config: NodeConfig, args: argparse.Namespace) -> int:
    from pacsnode.services.archive import Archive
    from pacsnode.services.bulk_import import ImportSummary, run_import

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"pacsnode: error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    start = time.monotonic()
    tty = sys.stderr.isatty()

    def progress(summary: ImportSummary) -> None:
        n = summary.total
        if tty or n % 1000 == 0:
            rate = n / max(time.monotonic() - start, 1e-9)
            line = f"{n} files, {rate:.0f}/s: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    archive = Archive.open(config)
    try:
        summary = run_import(archive, args.paths, max(1, args.jobs), progress)
    finally:
        archive.close()
    if tty:
        print(file=sys.stderr)
    elapsed = time.monotonic() - start
    counts = summary.counts
    print(
        f"imported {summary.total} files in {elapsed:.1f}s: stored {counts['stored']}, "
        f"duplicate {counts['duplicate']}, replaced {counts['replaced']}, rejected {counts['rejected']}"
    )
    for path, reason in summary.rejected:
        print(f"rejected {path}: {reason}")
    return 1 if summary.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
