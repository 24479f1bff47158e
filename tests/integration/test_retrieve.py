"""C-MOVE with DCMTK's movescu to DCMTK storescp destinations, and C-GET with getscu.

The node holds the generated set, with two instances of study S4 re-encoded by DCMTK (RLE,
JPEG-LS) so that one study mixes compressed and uncompressed syntaxes, and a study S5 of 25
instances that C-MOVEs go to destinations over three associations at once.
"""
from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import warnings
from collections import Counter

import numpy as np

import pytest
from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt

from tests.data_gen import PATIENTS, STUDIES, Study, generate
from tests.integration.helpers import (
    STUDY_ROOT_MOVE,
    DicomFile,
    association,
    describe,
    getscu,
    identifier,
    movescu,
    received_by_uid,
    run,
    split_part10,
)
from tests.peers import StoreSCP, dcmtk, free_port

pytestmark = pytest.mark.integration

S1, S2, S3, S4 = (s.uid for s in STUDIES)
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
# Sent over three associations at once: far more instances than the senders take at their
# start (one each, and one read ahead).
MANY = Study("S5", PATIENTS["P2"], "20220301", "101500", "ACC-2002", "CT many slices", (("CT", 5),) * 5)
S5 = MANY.uid
PARALLEL = 3
# storescp's log with the process id on each line: which forked child (association) stored what.
LOG_WITH_PID = """log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.ImmediateFlush = true
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %i %p: %m%n
"""


@pytest.fixture(scope="module")
def archive(load_node, generated, tmp_path_factory):
    """(node, destinations, files stored): ALL accepts every syntax and writes what it
    receives bit for bit; IMPLICIT accepts Implicit VR Little Endian only; DOWN is known to
    the node but never started. Over three associations at once: PARALLEL, like ALL but a
    process per association (--fork) logging its process id; SLOW, pynetdicom answering
    each C-STORE late; HALF, PARALLEL behind a relay that lets one association through.
    QUITS (one association) and QUITS3 (three) abort once they hold a few instances."""
    folder = tmp_path_factory.mktemp("destinations")
    (folder / "log.cfg").write_text(LOG_WITH_PID)
    parallel = ["--fork", "-lc", str(folder / "log.cfg"), "+xa", "+B"]
    destinations = {
        "ALL": StoreSCP(folder / "all", ["+xa", "+B"], ae_title="ALL"),
        "IMPLICIT": StoreSCP(folder / "implicit", ["+xi", "+B"], ae_title="IMPLICIT"),
        "DOWN": StoreSCP(folder / "down", ae_title="DOWN"),
        "PARALLEL": StoreSCP(folder / "parallel", parallel, ae_title="PARALLEL"),
        "SLOW": SlowSCP("SLOW"),
        "QUITS": AbortingSCP("QUITS"),
    }
    destinations["QUITS3"] = destinations["QUITS"]
    destinations["HALF"] = FirstOnlyRelay(destinations["PARALLEL"].port)
    encoded = {}
    for inst, (program, *options) in zip(generated.of_study("S4")[1:], (["dcmcrle"], ["dcmcjpls", "+el"])):
        out = folder / f"{inst.path.stem}-{program}.dcm"
        proc = run([dcmtk(program), *options, "+un", str(inst.path), str(out)])
        assert proc.returncode == 0, proc.stdout
        encoded[inst.path] = out
    files = [describe(encoded.get(p, p)) for p in generated.paths]
    assert {f.transfer_syntax for f in files if f.study_uid == S4} == {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80"}
    files += [describe(p) for p in generate(folder / "many", (MANY,)).paths]
    remotes = {aet: d.port for aet, d in destinations.items()}
    for aet in ("PARALLEL", "SLOW", "HALF", "QUITS3"):
        remotes[aet] = f"{remotes[aet]};associations={PARALLEL}"
    node, report = load_node(files, remotes=remotes)
    assert len(report.succeeded()) == len(files), report.output
    yield node, destinations, files
    for scp in destinations.values():
        scp.stop()


@pytest.fixture
def destination(archive):
    """Start a destination for one test (a storescp with an empty folder)."""
    started = []

    def start(aet: str):
        peer = archive[1][aet]
        if isinstance(peer, StoreSCP):
            peer.folder.mkdir(parents=True, exist_ok=True)
            peer.clear()
        started.append(peer.start())
        return peer

    yield start
    for peer in started:
        peer.stop()


class SlowSCP:
    """pynetdicom's Storage SCP in this process, answering each C-STORE after ``DELAY``
    seconds (so that a C-CANCEL finds work left), noting which association (the node's
    port) brought each instance."""

    DELAY = 0.03

    def __init__(self, ae_title: str) -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.received: dict[str, int] = {}
        self.server = None

    def start(self) -> "SlowSCP":
        self.received.clear()
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        handlers = [(evt.EVT_C_STORE, self._on_store)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_store(self, event) -> int:
        time.sleep(self.DELAY)
        self.received[event.request.AffectedSOPInstanceUID] = event.assoc.requestor.port
        return 0x0000


class AbortingSCP(SlowSCP):
    """A destination that fails in the middle of a move: the association that brings it
    another instance once it holds ``KEEP`` is aborted; any other association goes on."""

    KEEP = 5

    def start(self) -> "AbortingSCP":
        self.lock = threading.Lock()
        self.aborted = False
        return super().start()

    def _on_store(self, event) -> int:
        with self.lock:
            if len(self.received) >= self.KEEP and not self.aborted:
                self.aborted = True
                event.assoc.abort()
                return 0xA700
            self.received[event.request.AffectedSOPInstanceUID] = event.assoc.requestor.port
        return 0x0000


class FirstOnlyRelay:
    """A destination that takes one association of several: the first connection is relayed
    to ``target`` (a storescp), every later one is closed unanswered."""

    def __init__(self, target: int) -> None:
        self.port = free_port()
        self.target = target
        self.refused = 0
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> "FirstOnlyRelay":
        self.refused = 0
        self.stopped.clear()
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, args=(listener,), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.stopped.set()
            self.thread.join()
            self.thread = None

    def _serve(self, listener: socket.socket) -> None:
        with listener:
            relayed = False
            while not self.stopped.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                if relayed:
                    self.refused += 1
                    conn.close()
                    continue
                relayed = True
                conn.settimeout(None)
                upstream = socket.create_connection(("127.0.0.1", self.target))
                for source, sink in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError), source:
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def stores_by_process(log: str) -> Counter:
    """C-STORE requests per storescp process (one per association with --fork), from a log
    written with LOG_WITH_PID. Not anchored at line starts: another process's progress dots
    ("RECV: ...") may stand before a line."""
    return Counter(re.findall(r"(?<!\d)(\d+) INFO: Received Store Request", log))


def uid_list(value) -> list[str]:
    """A multi-valued UID element as a list (pydicom gives a single value as a string)."""
    return [value] if isinstance(value, str) else list(value)


def of_study(files: list[DicomFile], study_uid: str) -> list[DicomFile]:
    return [f for f in files if f.study_uid == study_uid]


def assert_same_bytes(received: dict, files: list[DicomFile]) -> None:
    """Every file arrived, dataset bytes identical to the file first sent, in its syntax."""
    assert sorted(received) == sorted(f.sop_instance_uid for f in files)
    for f in files:
        meta, data = split_part10(received[f.sop_instance_uid])
        assert str(meta.TransferSyntaxUID) == f.transfer_syntax, f.name
        assert data == split_part10(f.path)[1], f.name


def test_movescu_study(archive, destination):
    node, _, files = archive
    scp = destination("ALL")
    result = movescu(node, "ALL", {"StudyInstanceUID": S1})
    assert result.returncode == 0, result.output
    assert result.final == {"status": 0, "completed": 5, "failed": 0, "warning": 0}
    assert_same_bytes(received_by_uid(scp.folder), of_study(files, S1))


def test_movescu_compressed_and_uncompressed_study_bit_for_bit(archive, destination):
    node, _, files = archive
    scp = destination("ALL")
    result = movescu(node, "ALL", {"StudyInstanceUID": S4})
    assert result.final == {"status": 0, "completed": 3, "failed": 0, "warning": 0}, result.output
    assert_same_bytes(received_by_uid(scp.folder), of_study(files, S4))


def test_movescu_instances_by_uid_list(archive, destination):
    node, _, files = archive
    scp = destination("ALL")
    wanted = [of_study(files, S1)[0], of_study(files, S1)[3]]  # one of each S1 series
    keys = {"StudyInstanceUID": S1, "SOPInstanceUID": "\\".join(f.sop_instance_uid for f in wanted)}
    result = movescu(node, "ALL", keys, level="IMAGE")
    assert result.final == {"status": 0, "completed": 2, "failed": 0, "warning": 0}, result.output
    assert_same_bytes(received_by_uid(scp.folder), wanted)


def test_move_to_unknown_destination(archive):
    node, _, _ = archive
    result = movescu(node, "NOWHERE", {"StudyInstanceUID": S1})
    assert result.final.get("status") == 0xA801, result.output
    with association(node, [STUDY_ROOT_MOVE]) as assoc:
        responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=S1), "NOWHERE", STUDY_ROOT_MOVE))
    assert [status.Status for status, _ in responses] == [0xA801]


def test_move_to_a_destination_that_is_down(archive):
    """Every sub-operation fails (none is a warning), and each instance is listed."""
    node, _, files = archive
    study = sorted(f.sop_instance_uid for f in of_study(files, S2))
    with association(node, [STUDY_ROOT_MOVE]) as assoc:
        responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=S2), "DOWN", STUDY_ROOT_MOVE))
    status, ident = responses[-1]
    assert 0xA700 <= status.Status <= 0xA7FF or 0xC000 <= status.Status <= 0xCFFF, hex(status.Status)
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations, status.NumberOfWarningSuboperations) == (0, 2, 0)
    assert sorted(ident.FailedSOPInstanceUIDList) == study


def test_move_to_a_destination_without_compressed_syntaxes(archive, destination):
    """IMPLICIT takes Implicit VR Little Endian only: the Explicit VR instance is converted,
    the RLE and JPEG-LS ones are decoded by the pixel pipeline; every other attribute and
    the pixels themselves stay what they were."""
    node, _, files = archive
    scp = destination("IMPLICIT")
    study = of_study(files, S4)
    assert {f.transfer_syntax for f in study} > {"1.2.840.10008.1.2.1"}, "the study must hold compressed instances"
    with association(node, [STUDY_ROOT_MOVE]) as assoc:
        responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=S4), "IMPLICIT", STUDY_ROOT_MOVE))
    status, ident = responses[-1]
    assert status.Status == 0x0000, status
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations, status.NumberOfWarningSuboperations) == (len(study), 0, 0)

    received = received_by_uid(scp.folder)
    assert sorted(received) == sorted(f.sop_instance_uid for f in study)
    for f in study:
        meta, _ = split_part10(received[f.sop_instance_uid])
        assert str(meta.TransferSyntaxUID) == IMPLICIT_VR_LE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got, original = dcmread(received[f.sop_instance_uid]), dcmread(f.path)
        assert np.array_equal(got.pixel_array, original.pixel_array), f.name
        skip = {0x7FE00010}
        assert [(e.tag, e.value) for e in got if e.tag not in skip] == [(e.tag, e.value) for e in original if e.tag not in skip]

    # movescu sees the same outcome.
    scp.clear()
    result = movescu(node, "IMPLICIT", {"StudyInstanceUID": S4})
    assert result.final == {"status": 0x0000, "completed": len(study), "failed": 0, "warning": 0}, result.output


def test_getscu_series(archive, tmp_path):
    node, _, files = archive
    series = [f for f in of_study(files, S1) if f.series_uid.endswith(".1")]
    assert len(series) == 3
    result = getscu(node, {"StudyInstanceUID": S1, "SeriesInstanceUID": series[0].series_uid}, "SERIES", tmp_path)
    assert result.returncode == 0, result.output
    assert result.final == {"status": 0, "completed": 3, "failed": 0, "warning": 0, "remaining": 0}
    assert_same_bytes(received_by_uid(tmp_path), series)


def test_getscu_study(archive, tmp_path):
    node, _, files = archive
    result = getscu(node, {"StudyInstanceUID": S3}, "STUDY", tmp_path)
    assert result.final == {"status": 0, "completed": 3, "failed": 0, "warning": 0, "remaining": 0}, result.output
    assert_same_bytes(received_by_uid(tmp_path), of_study(files, S3))


# -- C-MOVE over several associations (the destination's ;associations=3) -----------------


def test_movescu_over_three_associations(archive, destination):
    """PARALLEL is a storescp forking a process per association: three of them each receive a
    share of the study, and every instance arrives bit for bit."""
    node, _, files = archive
    study = of_study(files, S5)
    scp = destination("PARALLEL")
    since = len(scp.log_text())
    result = movescu(node, "PARALLEL", {"StudyInstanceUID": S5})
    assert result.final == {"status": 0, "completed": len(study), "failed": 0, "warning": 0}, result.output
    assert_same_bytes(received_by_uid(scp.folder), study)
    log = scp.log_text()[since:]
    assert log.count("Association Acknowledged") == PARALLEL, log
    per_process = stores_by_process(log)
    assert len(per_process) == PARALLEL and sum(per_process.values()) == len(study), per_process


def test_pending_counts_over_several_associations(archive, destination):
    """Three senders share one tally: each pending response has one more completed
    sub-operation than the one before, and remaining + completed is always the study."""
    node, _, files = archive
    study = of_study(files, S5)
    scp = destination("SLOW")
    with association(node, [STUDY_ROOT_MOVE]) as assoc:
        responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=S5), "SLOW", STUDY_ROOT_MOVE))
    *pending, (final, _) = responses
    assert [status.Status for status, _ in pending] == [0xFF00] * (len(study) - 1)
    counts = [
        (s.NumberOfRemainingSuboperations, s.NumberOfCompletedSuboperations, s.NumberOfFailedSuboperations, s.NumberOfWarningSuboperations)
        for s, _ in pending
    ]
    assert counts == [(len(study) - n, n, 0, 0) for n in range(1, len(study))]
    assert final.Status == 0x0000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations, final.NumberOfWarningSuboperations) == (len(study), 0, 0)
    assert sorted(scp.received) == sorted(f.sop_instance_uid for f in study)
    assert len(set(scp.received.values())) == PARALLEL, "not sent over three associations"


def test_c_cancel_stops_every_association(archive, destination):
    """C-CANCEL after the first pending response: no sender takes another instance; the final
    response (0xFE00) counts as remaining, and lists, exactly the instances never sent."""
    node, _, files = archive
    study = {f.sop_instance_uid for f in of_study(files, S5)}
    scp = destination("SLOW")
    with association(node, [STUDY_ROOT_MOVE]) as assoc:
        responses = assoc.send_c_move(identifier("STUDY", StudyInstanceUID=S5), "SLOW", STUDY_ROOT_MOVE, msg_id=9)
        status, _ = next(responses)
        assert status.Status == 0xFF00
        context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STUDY_ROOT_MOVE)
        assoc.send_c_cancel(9, context.context_id)
        final, ident = list(responses)[-1]
    assert final.Status == 0xFE00, final
    remaining, completed = final.NumberOfRemainingSuboperations, final.NumberOfCompletedSuboperations
    assert remaining > 0, "the cancel came too late to stop anything"
    assert (final.NumberOfFailedSuboperations, final.NumberOfWarningSuboperations) == (0, 0)
    assert completed + remaining == len(study)
    never_sent = set(uid_list(ident.FailedSOPInstanceUIDList))
    assert len(never_sent) == remaining and set(scp.received) == study - never_sent


def test_move_when_only_some_associations_open(archive, destination):
    """HALF lets one association of three through: the node sends the whole study over it."""
    node, _, files = archive
    study = of_study(files, S5)
    scp = destination("PARALLEL")
    relay = destination("HALF")
    since = len(scp.log_text())
    result = movescu(node, "HALF", {"StudyInstanceUID": S5})
    assert result.final == {"status": 0, "completed": len(study), "failed": 0, "warning": 0}, result.output
    assert_same_bytes(received_by_uid(scp.folder), study)
    assert relay.refused == PARALLEL - 1
    assert len(stores_by_process(scp.log_text()[since:])) == 1
    node.wait_log(f"1 of {PARALLEL} associations with HALF opened")


@pytest.mark.parametrize("aet", ["QUITS", "QUITS3"])
def test_move_to_a_destination_that_aborts_midway(archive, destination, aet):
    """The instance in flight on the aborted association fails; the others go over the
    associations still open (QUITS3), or, when none is left (QUITS), fail at once and are
    listed in the final response."""
    node, _, files = archive
    study = {f.sop_instance_uid for f in of_study(files, S5)}
    scp = destination(aet)
    started = time.monotonic()
    with association(node, [STUDY_ROOT_MOVE]) as assoc:
        responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=S5), aet, STUDY_ROOT_MOVE))
    final, ident = responses[-1]
    assert time.monotonic() - started < 20, "the move waited for answers that could not come"
    assert final.Status == 0xB000, final
    completed, failed = final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations
    assert completed == len(scp.received) and completed + failed == len(study)
    assert failed == (1 if aet == "QUITS3" else len(study) - AbortingSCP.KEEP)
    assert set(uid_list(ident.FailedSOPInstanceUIDList)) == study - set(scp.received)
