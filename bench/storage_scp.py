"""The plain pynetdicom reference: a Storage SCP that writes each dataset to a file, nothing more.

What pynetdicom gives anyone in a dozen lines (the pattern of its documentation): the encoded
dataset as received, after a File Meta header, written to OUT/<SOP Instance UID>; no index,
no fsync. TCP_NODELAY is set on every connection (pynetdicom never does, and loopback would
otherwise stall ~40 ms per PDU on delayed ACKs), as pacsnode does for itself.

  python -m bench.storage_scp --port 11114 --aet PYSCP --out /tmp/received
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--aet", default="PYSCP")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)

    def on_open(event: evt.Event) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_store(event: evt.Event) -> int:
        name = event.request.AffectedSOPInstanceUID.strip("\x00 ")
        with open(os.path.join(a.out, name), "wb") as fh:
            fh.write(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title=a.aet)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_associations = 16
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = ae.start_server((a.host, a.port), block=False,
                             evt_handlers=[(evt.EVT_CONN_OPEN, on_open), (evt.EVT_C_STORE, on_store)])
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
