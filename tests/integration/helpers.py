"""Driving DCMTK's programs and pynetdicom against a running node, and reading what it stored."""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import lmdb
from pydicom import Dataset, dcmread
from pydicom.filereader import read_dataset, read_preamble
from pynetdicom import AE

from pacsnode.index import LmdbIndex
from pacsnode.storage import LocalBlobStore
from tests.peers import Node, dcmtk

TIMEOUT = 120
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
# DCMTK proposes at most this many presentation contexts per association.
MAX_CONTEXTS = 128


def run(cmd: list[str], cwd: Path | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a peer program; output (stdout and stderr together) is in ``.stdout``."""
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", timeout=timeout)


# -- Part 10 files ----------------------------------------------------------------------


def split_part10(source: Path | str | bytes) -> tuple[Dataset, bytes]:
    """(File Meta, the encoded dataset bytes after it) of a Part 10 file, read with pydicom."""
    with (io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")) as fp:
        read_preamble(fp, False)
        meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, vr, length: tag.group != 2)
        return meta, fp.read()


@dataclass(frozen=True)
class DicomFile:
    """A corpus (or generated) file with the attributes the tests reason about."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    patient_id: str
    modality: str

    @property
    def name(self) -> str:
        return self.path.name


def describe(path: Path | str) -> DicomFile | None:
    """The file's identity if pydicom reads it as DICOM with the UIDs and File Meta a store
    needs (SOP Instance, Study and Series Instance UIDs, Transfer Syntax UID), else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, stop_before_pixels=True)
            meta = getattr(ds, "file_meta", None)
            ts = meta.get("TransferSyntaxUID") if meta is not None else None
            uids = [str(ds.get(k) or "").strip() for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")]
            if not ts or not all(uids):
                return None
            return DicomFile(
                Path(path), str(ds.get("SOPClassUID") or ""), *uids, str(ts), str(ds.get("PatientID") or "").strip(),
                str(ds.get("Modality") or "").strip(),
            )
    except Exception:
        return None


def rounds(files: list[DicomFile]) -> list[list[DicomFile]]:
    """Split files so that no round holds one SOP Instance UID twice.

    The corpus has up to 19 files per SOP Instance UID (one image in many syntaxes); a node
    keeps one content per UID, so each round goes to a fresh node.
    """
    seen: Counter[str] = Counter()
    out: list[list[DicomFile]] = []
    for f in files:
        k = seen[f.sop_instance_uid]
        seen[f.sop_instance_uid] += 1
        if k == len(out):
            out.append([])
        out[k].append(f)
    return out


# -- the node's storage ------------------------------------------------------------------


@dataclass
class StoredArchive:
    """The node's index and blob store, opened by the test while the node is stopped."""

    index: LmdbIndex
    blobs: LocalBlobStore

    def instances(self) -> list[dict]:
        return list(self.index.find("IMAGE", {}))

    def check(self, f: DicomFile, expected_dataset: bytes) -> list[str]:
        """Problems with one stored instance: its record, File Meta and dataset bytes."""
        record = self.index.get_instance(f.sop_instance_uid)
        if record is None:
            return [f"{f.name}: not in the index"]
        problems = []
        if record.transfer_syntax != f.transfer_syntax:
            problems.append(f"{f.name}: indexed syntax {record.transfer_syntax} != {f.transfer_syntax}")
        meta, dataset = split_part10(self.blobs.read(record.blob_id))
        for kw, want in (
            ("TransferSyntaxUID", f.transfer_syntax),
            ("MediaStorageSOPInstanceUID", f.sop_instance_uid),
            ("MediaStorageSOPClassUID", f.sop_class_uid),
        ):
            if str(meta.get(kw, "")) != want:
                problems.append(f"{f.name}: stored {kw} {meta.get(kw)!r} != {want!r}")
        if dataset != expected_dataset:
            at = next((i for i, (a, b) in enumerate(zip(dataset, expected_dataset)) if a != b), min(len(dataset), len(expected_dataset)))
            problems.append(f"{f.name}: stored dataset differs ({len(dataset)} vs {len(expected_dataset)} bytes, first at {at})")
        return problems


@contextlib.contextmanager
def stored_archive(node: Node) -> Iterator[StoredArchive]:
    """Open what the node stored; the node must be stopped (one writer per data folder)."""
    assert node.proc is None, "stop the node before opening its data"
    index = LmdbIndex(node.data / "index", map_size=1 << 30)
    blobs = LocalBlobStore(node.data / "blobs", inline=index)
    try:
        yield StoredArchive(index, blobs)
    finally:
        blobs.close()
        index.close()


def blob_snapshot(node: Node) -> dict[str, int]:
    """Every file under the data folder's blobs/ and every blob the index keeps itself (small
    instances), with their sizes: equal snapshots mean no instance's bytes were written."""
    root = node.data / "blobs"
    snapshot = {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    if not (node.data / "index" / "data.mdb").exists():
        return snapshot
    env = lmdb.open(str(node.data / "index"), readonly=True, max_dbs=64)
    try:
        with env.begin() as txn:
            try:
                inline = env.open_db(b"blobs", txn=txn, create=False)
            except lmdb.NotFoundError:
                return snapshot
            snapshot.update((key.decode(), len(value)) for key, value in txn.cursor(db=inline))
    finally:
        env.close()
    return snapshot


# -- storescu ----------------------------------------------------------------------------


@dataclass
class StoreReport:
    """What storescu did with each file: 'Success', another response text, or why not sent."""

    outcome: dict[Path, str] = field(default_factory=dict)
    order: list[Path] = field(default_factory=list)  # files in the order they were sent
    output: str = ""

    def succeeded(self) -> list[Path]:
        return [p for p in self.order if self.outcome.get(p) == "Success"]


def write_profile(files: list[DicomFile], path: Path, scp: bool = False) -> Path:
    """A DCMTK association negotiation profile ("Exact") for ``files``.

    For storescu: one context per (SOP class, transfer syntax) pair, so each file goes out in
    its own syntax. For storescp (``scp``): one context per SOP class listing all its syntaxes
    (DCMTK allows each abstract syntax once in an SCP profile).
    """
    pairs = list(dict.fromkeys((f.sop_class_uid, f.transfer_syntax) for f in files))
    if scp:
        by_class: dict[str, list[str]] = {}
        for c, ts in pairs:
            by_class.setdefault(c, []).append(ts)
        groups = [(c, tuple(ts)) for c, ts in by_class.items()]
    else:
        groups = [(c, (ts,)) for c, ts in pairs]
    syntax_lists = list(dict.fromkeys(ts for _, ts in groups))
    lines = ["[[TransferSyntaxes]]"]
    for n, ts_list in enumerate(syntax_lists):
        lines.append(f"[TS{n}]")
        lines += [f"TransferSyntax{i} = {ts}" for i, ts in enumerate(ts_list, 1)]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    lines += [f"PresentationContext{i} = {c}\\TS{syntax_lists.index(ts)}" for i, (c, ts) in enumerate(groups, 1)]
    lines += ["[[Profiles]]", "[Exact]", "PresentationContexts = Contexts"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _batches(files: list[DicomFile]) -> list[list[DicomFile]]:
    """Consecutive groups of files needing at most MAX_CONTEXTS (SOP class, syntax) pairs."""
    out: list[list[DicomFile]] = []
    pairs: set[tuple[str, str]] = set()
    for f in files:
        pair = (f.sop_class_uid, f.transfer_syntax)
        if not out or (pair not in pairs and len(pairs) == MAX_CONTEXTS):
            out.append([])
            pairs = set()
        pairs.add(pair)
        out[-1].append(f)
    return out


_SENDING = re.compile(r"^I: Sending file: (.*)$")
_RESPONSE = re.compile(r"^I: Received Store Response \((.*)\)\s*$")
_ERROR = re.compile(r"^[EF]: (.*)$")


def storescu(port: int, files: list[DicomFile], workdir: Path, called: str = "PACSNODE") -> StoreReport:
    """Send ``files`` with DCMTK storescu, each in its own transfer syntax, unconverted.

    storescu proposes compressed syntaxes only one kind at a time (-xs, -xv ...), and none for
    JPEG Lossless Process 14 (.57); a negotiation profile (-xf) proposing exactly each file's
    (SOP class, transfer syntax) pair, one per context, makes it send every file as it is
    encoded. ``-nh`` goes on after a refused file.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    report = StoreReport()
    for n, batch in enumerate(_batches(files)):
        cfg = write_profile(batch, workdir / f"storescu{n}.cfg")
        cmd = [dcmtk("storescu"), "-v", "-nh", "-aec", called, "-xf", str(cfg), "Exact", "127.0.0.1", str(port)]
        proc = run(cmd + [str(f.path) for f in batch])
        report.output += proc.stdout
        current: Path | None = None
        for line in proc.stdout.splitlines():
            if m := _SENDING.match(line):
                current = Path(m.group(1))
                report.order.append(current)
                report.outcome[current] = "no response"
            elif (m := _RESPONSE.match(line)) and current is not None:
                report.outcome[current] = m.group(1)
            elif (m := _ERROR.match(line)) and current is not None and report.outcome[current] == "no response":
                report.outcome[current] = m.group(1)
        for f in batch:
            if f.path not in report.outcome:
                # Refused while checking its input files: quote storescu's reason.
                why = [l for l in proc.stdout.splitlines() if str(f.path) in l or f.path.name in l]
                report.outcome[f.path] = "not sent: " + (" / ".join(why) or "no reason given")
    return report


# -- findscu, movescu, getscu ------------------------------------------------------------


def _keys(keys: dict[str, str | None]) -> list[str]:
    args = []
    for kw, value in keys.items():
        args += ["-k", kw if value is None else f"{kw}={value}"]
    return args


def findscu(node: Node, level: str, keys: dict[str, str | None], workdir: Path, model: str = "S") -> list[Dataset]:
    """C-FIND with DCMTK findscu (``-S`` study or ``-P`` patient root); the responses in order.

    ``None`` values are universal (empty) keys. Fails the test unless the final status is Success.
    """
    out = workdir / f"find{len(list(workdir.glob('find*')))}"
    out.mkdir(parents=True)
    cmd = [dcmtk("findscu"), "-v", f"-{model}", "-aec", node.ae_title, "-X", "-od", str(out), "127.0.0.1", str(node.port)]
    proc = run(cmd + _keys({"QueryRetrieveLevel": level, **keys}))
    assert proc.returncode == 0 and "Received Final Find Response (Success)" in proc.stdout, proc.stdout
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@dataclass
class RetrieveResult:
    returncode: int
    output: str
    final: dict[str, int]  # counts and status parsed from the final response


_COUNT = re.compile(r"(Remaining|Completed|Failed|Warning) Suboperations\s*:\s*(\d+)")
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


def _final_response(output: str) -> dict[str, int]:
    """Counts and status of the last C-MOVE/C-GET response in DCMTK's debug dump."""
    blocks = re.split(r"=+ (?:INCOMING|OUTGOING) DIMSE MESSAGE =+", output)
    rsp = [b for b in blocks if re.search(r"Message Type\s*:\s*C-(MOVE|GET) RSP", b)]
    if not rsp:
        return {}
    last = rsp[-1]
    final = {k.lower(): int(v) for k, v in _COUNT.findall(last)}
    if m := _STATUS.search(last):
        final["status"] = int(m.group(1), 16)
    return final


def movescu(node: Node, destination: str, keys: dict[str, str], level: str = "STUDY") -> RetrieveResult:
    cmd = [dcmtk("movescu"), "-d", "-S", "-aec", node.ae_title, "-aem", destination, "127.0.0.1", str(node.port)]
    proc = run(cmd + _keys({"QueryRetrieveLevel": level, **keys}))
    return RetrieveResult(proc.returncode, proc.stdout, _final_response(proc.stdout))


def getscu(node: Node, keys: dict[str, str], level: str, folder: Path) -> RetrieveResult:
    """C-GET with DCMTK getscu; ``+B`` writes each received dataset to ``folder`` as it came."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [dcmtk("getscu"), "-d", "-S", "+B", "-aec", node.ae_title, "-od", str(folder), "127.0.0.1", str(node.port)]
    proc = run(cmd + _keys({"QueryRetrieveLevel": level, **keys}))
    return RetrieveResult(proc.returncode, proc.stdout, _final_response(proc.stdout))


def received_by_uid(folder: Path) -> dict[str, Path]:
    out = {}
    for p in folder.iterdir():
        if p.is_file():
            meta, _ = split_part10(p)
            out[str(meta.MediaStorageSOPInstanceUID)] = p
    return out


# -- pynetdicom as SCU -------------------------------------------------------------------


@contextlib.contextmanager
def association(node: Node, contexts: list[str] | None = None, ae_title: str = "PYSCU") -> Iterator:
    """An established pynetdicom association to the node, released on exit."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for uid in contexts or [STUDY_ROOT_FIND, PATIENT_ROOT_FIND]:
        ae.add_requested_context(uid)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established, "association with the node failed"
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def identifier(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for kw, value in keys.items():
        setattr(ds, kw, value)
    return ds


def find_all(assoc, query: Dataset, model: str = STUDY_ROOT_FIND) -> tuple[int, list[Dataset]]:
    """(final status, identifiers of the pending responses) of one C-FIND."""
    matches = []
    final = None
    for status, ident in assoc.send_c_find(query, model):
        assert status is not None and "Status" in status, "no C-FIND response (association lost?)"
        if status.Status in (0xFF00, 0xFF01):
            matches.append(ident)
        else:
            final = status.Status
    return final, matches


def pynetdicom_store(node: Node, files: list[DicomFile]) -> dict[Path, str]:
    """Send each file's encoded dataset verbatim (pynetdicom's chunked file sending): the
    bytes on the wire are exactly the file's. Returns 'Success', '0xNNNN' or why not sent."""
    from pynetdicom import _config, build_context

    outcome: dict[Path, str] = {}
    saved = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        for batch in _batches(files):
            pairs = list(dict.fromkeys((f.sop_class_uid, f.transfer_syntax) for f in batch))
            contexts = [build_context(c, ts) for c, ts in pairs]
            ae = AE(ae_title="PYSCU")
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
            assoc = ae.associate("127.0.0.1", node.port, contexts=contexts, ae_title=node.ae_title)
            assert assoc.is_established
            accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
            for f in batch:
                if (f.sop_class_uid, f.transfer_syntax) not in accepted:
                    outcome[f.path] = "not sent: the node accepts no context for its SOP class and syntax"
                    continue
                try:
                    status = assoc.send_c_store(f.path)
                except Exception as exc:  # pynetdicom refuses the file itself
                    outcome[f.path] = f"not sent: {type(exc).__name__}: {exc}"
                    continue
                code = getattr(status, "Status", None)
                outcome[f.path] = "no response" if code is None else "Success" if code == 0 else f"0x{code:04X}"
            assoc.release()
            ae.shutdown()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = saved
    return outcome


def store_datasets(node: Node, datasets: list[Dataset]) -> list[int]:
    """C-STORE pydicom datasets (Explicit VR Little Endian) over one association; the statuses."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ae = AE(ae_title="PYSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for uid in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    try:
        statuses = []
        for ds in datasets:
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            statuses.append(getattr(assoc.send_c_store(ds), "Status", None))
        return statuses
    finally:
        assoc.release()
        ae.shutdown()
