"""A bare C-FIND SCU on a blocking socket: the server's latency without pynetdicom's.

pynetdicom's association threads poll their socket and queues with 1 ms sleeps, so a query
costs it ~2-3 ms whatever the server does: against fast servers its figure is the client's.
This client speaks just enough DICOM upper layer (PS3.8) for one Study Root C-FIND context in
Implicit VR Little Endian: one write per request, blocking reads, nothing else. Only the
match count is read from the responses (identifiers are skipped, not decoded).
"""
from __future__ import annotations

import socket
import struct
import time

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1471.9.2"
PENDING = (0xFF00, 0xFF01)


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" * (len(raw) % 2)


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, elem, len(value)) + value


def _command(message_id: int) -> bytes:
    """C-FIND-RQ command set (always Implicit VR LE), with its group length."""
    body = (_element(0, 0x0002, _uid(STUDY_ROOT_FIND)) + _element(0, 0x0100, struct.pack("<H", 0x0020))
            + _element(0, 0x0110, struct.pack("<H", message_id)) + _element(0, 0x0700, struct.pack("<H", 0))
            + _element(0, 0x0800, struct.pack("<H", 0x0001)))
    return _element(0, 0x0000, struct.pack("<I", len(body))) + body


def _pdata(context_id: int, header: int, data: bytes) -> bytes:
    pdv = struct.pack(">IBB", len(data) + 2, context_id, header) + data
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


class WireFind:
    def __init__(self, host: str, port: int, called: str, calling: str = "PYSCU") -> None:
        self.sock = socket.create_connection((host, port), timeout=600)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.message_id = 0
        self.context_id = 1
        pc = _item(0x20, bytes([self.context_id, 0, 0, 0]) + _item(0x30, STUDY_ROOT_FIND.encode())
                   + _item(0x40, IMPLICIT_LE.encode()))
        user = _item(0x50, _item(0x51, struct.pack(">I", 1 << 20)) + _item(0x52, IMPLEMENTATION_UID.encode()))
        body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
                + _item(0x10, APPLICATION_CONTEXT.encode()) + pc + user)
        self.sock.sendall(struct.pack(">BBI", 0x01, 0, len(body)) + body)
        kind, body = self._pdu()
        if kind != 0x02:
            raise RuntimeError(f"association to {called} refused (PDU type {kind:#x})")
        pos = 68  # variable items of the A-ASSOCIATE-AC
        while pos < len(body):
            item, length = body[pos], struct.unpack(">H", body[pos + 2:pos + 4])[0]
            if item == 0x21 and body[pos + 6] != 0:
                raise RuntimeError(f"{called} did not accept Study Root C-FIND in Implicit VR LE")
            pos += 4 + length

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by the peer")
            buf += chunk
        return bytes(buf)

    def _pdu(self) -> tuple[int, bytes]:
        kind, _, length = struct.unpack(">BBI", self._read(6))
        return kind, self._read(length)

    def _messages(self):
        """Yield (status, has_dataset) per complete response message."""
        command, status, dataset_follows = b"", None, False
        while True:
            kind, body = self._pdu()
            if kind != 0x04:
                raise ConnectionError(f"unexpected PDU type {kind:#x} during C-FIND")
            pos = 0
            while pos < len(body):
                length, header = struct.unpack(">I", body[pos:pos + 4])[0], body[pos + 5]
                data = body[pos + 6:pos + 4 + length]
                pos += 4 + length
                if header & 0x01:  # command fragment
                    command += data
                    if header & 0x02:
                        status, dataset_type = _status(command)
                        command = b""
                        dataset_follows = dataset_type != 0x0101
                        if not dataset_follows:
                            yield status, False
                elif header & 0x02:  # last fragment of the identifier
                    yield status, True

    def find(self, keys: dict[str, str], return_keys: tuple[str, ...]) -> tuple[float, int, int | None]:
        """(seconds from request to final response, matches, final status)."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for kw in ("PatientID", "StudyDate", *return_keys, *keys):
            setattr(ds, kw, keys.get(kw, ""))
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, True
        write_dataset(fp, ds)
        self.message_id = self.message_id % 0xFFFF + 1
        # Command and identifier, each one last fragment (0x03: command, 0x02: dataset), in one write.
        request = (_pdata(self.context_id, 0x03, _command(self.message_id))
                   + _pdata(self.context_id, 0x02, fp.getvalue()))
        matches = 0
        t0 = time.perf_counter()
        self.sock.sendall(request)
        for status, _ in self._messages():
            if status in PENDING:
                matches += 1
            else:
                return time.perf_counter() - t0, matches, status
        raise AssertionError("unreachable")

    def close(self) -> None:
        try:
            self.sock.sendall(struct.pack(">BBI", 0x05, 0, 4) + bytes(4))
            self._pdu()  # A-RELEASE-RP
        finally:
            self.sock.close()

    def __enter__(self) -> "WireFind":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _status(command: bytes) -> tuple[int | None, int]:
    """(Status, CommandDataSetType) of an Implicit VR LE command set."""
    status, dataset_type, pos = None, 0x0101, 0
    while pos + 8 <= len(command):
        _, elem, length = struct.unpack("<HHI", command[pos:pos + 8])
        value = command[pos + 8:pos + 8 + length]
        if elem == 0x0900:
            status = struct.unpack("<H", value)[0]
        elif elem == 0x0800:
            dataset_type = struct.unpack("<H", value)[0]
        pos += 8 + length
    return status, dataset_type
