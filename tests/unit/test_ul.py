"""The fast path's upper layer against pynetdicom's own encoders and decoders."""
from __future__ import annotations

import asyncio
import random

import pytest
from pydicom.uid import generate_uid
from pynetdicom.dimse_messages import C_ECHO_RSP, C_FIND_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from pacsnode.services.part10 import FileDataset
from pacsnode.ul import commands, pdu
from pacsnode.ul.association import FastAssociation, FastPathContext
from pacsnode.ul.stream import write_message


def _pdata_pdus(message, context_id: int, max_pdu: int) -> list[bytes]:
    out = []
    for primitive in message.encode_msg(context_id, max_pdu):
        tf = P_DATA_TF()
        tf.from_primitive(primitive)
        out.append(tf.encode())
    return out


def _reassemble(pdus: list[bytes]) -> tuple[bytes, bytes, set[int]]:
    command, dataset, contexts = [], [], set()
    for raw in pdus:
        pdu_type, length = pdu.PDU_HEADER.unpack_from(raw)
        assert pdu_type == pdu.P_DATA_TF and length == len(raw) - 6
        for context_id, is_command, _, fragment in pdu.iter_pdvs(memoryview(raw)[6:]):
            contexts.add(context_id)
            (command if is_command else dataset).append(bytes(fragment))
    return b"".join(command), b"".join(dataset), contexts


@pytest.mark.parametrize("max_pdu", [0, 16384, 1000, 128])
def test_c_store_rq_from_pynetdicom_decodes_the_same(max_pdu):
    req = C_STORE()
    req.MessageID = 7
    req.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    req.AffectedSOPInstanceUID = generate_uid()
    req.Priority = 1
    req.MoveOriginatorApplicationEntityTitle = "MOVER"
    req.MoveOriginatorMessageID = 3
    payload = random.Random(max_pdu).randbytes(5000)
    from io import BytesIO

    req.DataSet = BytesIO(payload)
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    command, dataset, contexts = _reassemble(_pdata_pdus(message, 5, max_pdu))
    decoded = commands.decode_command(command)
    assert decoded == commands.Command(commands.C_STORE_RQ, 7, True, req.AffectedSOPClassUID, req.AffectedSOPInstanceUID)
    assert dataset == payload and contexts == {5}


@pytest.mark.parametrize("comment", [None, "odd length!", "x" * 80])
def test_c_store_rsp_decodes_in_pynetdicom(comment):
    uid = generate_uid()
    raw = commands.encode_response(commands.C_STORE_RQ, 9, 0xA900, "1.2.840.10008.5.1.4.1.1.7", uid, comment)
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[3, b"\x03" + raw]]
    message = C_STORE_RSP()
    assert message.decode_msg(primitive)
    rsp = message.message_to_primitive()
    assert isinstance(rsp, C_STORE)
    assert (rsp.MessageIDBeingRespondedTo, rsp.Status, rsp.AffectedSOPInstanceUID) == (9, 0xA900, uid)
    assert rsp.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert rsp.ErrorComment == (comment[:64] if comment else None)


def test_c_echo_rsp_decodes_in_pynetdicom():
    raw = commands.encode_response(commands.C_ECHO_RQ, 1, 0x0000, "1.2.840.10008.1.1")
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[1, b"\x03" + raw]]
    message = C_ECHO_RSP()
    assert message.decode_msg(primitive)
    rsp = message.message_to_primitive()
    assert isinstance(rsp, C_ECHO) and rsp.Status == 0 and rsp.MessageIDBeingRespondedTo == 1


@pytest.mark.parametrize("size,max_pdu", [(0, 0), (10, 16), (5000, 1000), (5000, 0), (16384, 16384)])
def test_p_data_fragments_decode_in_pynetdicom(size, max_pdu):
    payload = bytes(range(256)) * (size // 256) + b"\x01" * (size % 256)
    pdus = pdu.p_data(11, False, payload, max_pdu)
    got = b""
    for n, raw in enumerate(pdus):
        assert max_pdu == 0 or len(raw) - 6 <= max_pdu
        tf = P_DATA_TF()
        tf.decode(raw)
        ((context_id, data),) = tf.to_primitive().presentation_data_value_list
        assert context_id == 11
        assert data[0] == (0x02 if n == len(pdus) - 1 else 0x00)
        got += data[1:]
    assert got == payload


@pytest.mark.parametrize("max_pdu", [0, 16384, 200, 120])
def test_a_response_with_its_identifier_decodes_in_pynetdicom(max_pdu):
    """Command and identifier share one PDU when it fits (two PDVs), else one PDU each or more."""
    raw = commands.encode_response(commands.C_FIND_RQ, 4, 0xFF00, "1.2.840.10008.5.1.4.1.2.2.1", None, None, True)
    identifier = bytes(range(100))
    pdus = pdu.p_data_message(3, raw, identifier, max_pdu)
    fits = max_pdu == 0 or len(raw) + len(identifier) + 12 <= max_pdu
    assert len(pdus) == 1 if fits else len(pdus) >= 2
    message = C_FIND_RSP()
    for n, encoded in enumerate(pdus):
        assert max_pdu == 0 or len(encoded) - 6 <= max_pdu
        tf = P_DATA_TF()
        tf.decode(encoded)
        assert message.decode_msg(tf.to_primitive()) == (n == len(pdus) - 1)
    rsp = message.message_to_primitive()
    assert (rsp.MessageIDBeingRespondedTo, rsp.Status) == (4, 0xFF00)
    assert rsp.Identifier.getvalue() == identifier


@pytest.mark.parametrize(
    "body",
    [b"\x00\x00\x00", b"\x00\x00\x00\x10\x01\x03abc", b"\x00\x00\x00\x01\x01"],
)
def test_malformed_pdv_items(body):
    with pytest.raises(pdu.ProtocolError):
        list(pdu.iter_pdvs(memoryview(body)))


class _Recorder(FastAssociation):
    """The fast path's framing alone: every whole PDU it hands on, copied as it was then."""

    def __init__(self, max_pdu: int) -> None:
        super().__init__(FastPathContext(archive=None, supported={}, max_pdu=max_pdu, idle_timeout=60), sock=_Socket())
        self.transport = _OpenTransport()
        self.seen: list[bytes] = []
        self.aborted: list[str] = []

    def receive(self, data: bytes) -> None:
        """``data`` as reads into the buffers the framer asks for, as uvloop does."""
        view = memoryview(data)
        while view:
            buffer = self.get_buffer(-1)
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    def _on_pdu(self, pdu_type: int, whole) -> None:
        assert whole[0] == pdu_type
        self.seen.append(bytes(whole))

    def _abort(self, why: str, reason: int) -> None:
        self.aborted.append(why)


class _OpenTransport:
    def is_closing(self) -> bool:
        return False


class _Socket:
    def setsockopt(self, *args) -> None:
        pass


@pytest.mark.parametrize("seed", range(20))
def test_pdus_are_framed_whatever_the_reads(seed):
    rng = random.Random(seed)
    pdus = []
    for _ in range(30):
        body = rng.randbytes(rng.choice([0, 1, 4, 5, 6, 100, 4090, 20000]))
        pdus.append(pdu.PDU_HEADER.pack(rng.choice([pdu.P_DATA_TF, pdu.A_RELEASE_RQ]), len(body)) + body)
    stream = b"".join(pdus)
    framer = _Recorder(max_pdu=16384)
    pos = 0
    while pos < len(stream):  # reads of 1 byte to several PDUs, cutting headers and bodies anywhere
        size = rng.choice([1, 2, 5, 6, 7, rng.randrange(1, 70000)])
        framer.receive(stream[pos : pos + size])
        pos += size
    assert framer.seen == pdus and not framer.aborted
    assert framer.pdu is None and framer.head_filled == 0


def test_oversized_pdu_is_refused_before_it_arrives():
    framer = _Recorder(max_pdu=1000)
    framer.receive(pdu.PDU_HEADER.pack(pdu.P_DATA_TF, 5000))
    assert framer.aborted == ["protocol error: PDU of 5000 bytes exceeds the maximum we announced"]
    assert framer.pdu is None, "a buffer was made for it"


class _Collector:
    """A transport that keeps what is written; ``drains`` counts the waits for it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.drains = 0

    def writelines(self, parts) -> None:
        self.written.append(b"".join(bytes(p) for p in parts))

    def is_closing(self) -> bool:
        return False

    async def writable(self) -> None:
        self.drains += 1


@pytest.mark.parametrize("max_pdu", [16384, 65536, 4 * 1024 * 1024 + 6, 1 << 24, 0])
@pytest.mark.parametrize("size", [1, 4 * 1024 * 1024 - 5, 9 * 1024 * 1024 + 333])
def test_a_dataset_sent_from_its_file_is_sent_in_pieces(tmp_path, max_pdu, size):
    """Read piece by piece from a file (each piece once the transport has drained), a dataset
    goes out as PDUs within the peer's maximum and no longer than a piece, carrying exactly
    its bytes, the last bit on the final one only; up to 4 MB PDUs, the very PDUs of the same
    bytes sent from memory."""
    dataset = random.Random(size).randbytes(size)
    path = tmp_path / "blob"
    path.write_bytes(b"META" * 33 + dataset)
    command = commands.encode_store_request(7, "1.2.840.10008.5.1.4.1.1.7", "1.2.3")
    whole, streamed = _Collector(), _Collector()
    asyncio.run(write_message(whole, whole.writable, 3, command, dataset, max_pdu))
    asyncio.run(write_message(streamed, streamed.writable, 3, command, FileDataset(path, 132, size), max_pdu))
    assert b"".join(whole.written) == b"".join(pdu.p_data(3, True, command, max_pdu) + pdu.p_data(3, False, dataset, max_pdu))
    if max_pdu and max_pdu <= 4 * 1024 * 1024 + 6:
        assert b"".join(streamed.written) == b"".join(whole.written)
    stream, pos, payload, flags = b"".join(streamed.written), 0, [], []
    while pos < len(stream):
        length = pdu.PDU_HEADER.unpack_from(stream, pos)[1]
        assert length <= (max_pdu or 1 << 32) and length <= 4 * 1024 * 1024 + 6  # the length field
        for _, is_command, last, fragment in pdu.iter_pdvs(memoryview(stream)[pos + 6 : pos + 6 + length]):
            if not is_command:
                payload.append(bytes(fragment))
                flags.append(last)
        pos += 6 + length
    assert b"".join(payload) == dataset and flags == [False] * (len(flags) - 1) + [True]
    assert streamed.drains == len(streamed.written) - 1 >= 1 + (size > 4 * 1024 * 1024)
