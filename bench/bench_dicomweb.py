"""DICOMweb benchmark: pacsnode against Orthanc's DICOMweb plugin on the same data, in one run.

Standalone (no other bench module is needed). It writes a corpus with pydicom:

  * N tiny studies (one 8x8 Secondary Capture instance each, a patient of its own, dates spread
    over years) for QIDO study search, and
  * one CT study of S slices, 512x512, 16 bits, Explicit VR Little Endian, for WADO-RS,

loads it into both servers (pacsnode: `pacsnode import`; Orthanc: DCMTK storescu), then measures
over HTTP keep-alive connections, the same requests against both:

  qido    /studies?PatientName=<LAST>* (one patient), ?PatientID=<id>, ?StudyDate=<range>&limit=25:
          sequential requests, median and 95th percentile latency
  frames  /studies/../instances/<i>/frames/1, Accept multipart/related; type=application/octet-stream,
          C concurrent clients for T seconds: frames/s and MB/s
  instances  /studies/../instances/<i>, Accept multipart/related; type="application/dicom":
          instances/s and MB/s

  python -m bench.bench_dicomweb                 # 10,000 studies, 200 CT slices
  python -m bench.bench_dicomweb --smoke         # 200 studies, 20 slices, short runs
  python -m bench.bench_dicomweb --no-orthanc    # pacsnode only

Orthanc is Debian's `orthanc` with `orthanc-dicomweb` (apt-get install orthanc orthanc-dicomweb).
Everything runs on 127.0.0.1; the workdir (default /tmp/pacsnode-bench-dicomweb) keeps the corpus
between runs. Results are printed and written to WORKDIR/results.json.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
SYLLABLES = ["BA", "DE", "FI", "GO", "HA", "KE", "LI", "MO", "NA", "PE", "RI", "SO",
             "TA", "VE", "WI", "ZO", "BRU", "CHA", "DRE", "GRO", "KLA", "MAR", "STE", "TRO"]  # fmt: skip
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"'
INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"'


def uid(*parts: object) -> str:
    digest = hashlib.sha256("/".join(["pacsnode-bench-dicomweb", *map(str, parts)]).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def last_name(p: int) -> str:
    n = len(SYLLABLES)
    return SYLLABLES[p % n] + SYLLABLES[(p // n) % n] + SYLLABLES[(p // n // n) % n] + SYLLABLES[(p // n // n // n) % n]


def study_date(s: int) -> str:
    day = 730000 + (s * 7919) % 3650  # spread over ten years, deterministic
    import datetime as dt

    return dt.date.fromordinal(day).strftime("%Y%m%d")


# -- corpus --------------------------------------------------------------------------------


def _write(ds, path: Path) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def write_corpus(root: Path, studies: int, slices: int) -> dict:
    """The corpus under root (reused when its manifest matches)."""
    manifest_path = root / "manifest.json"
    wanted = {"studies": studies, "slices": slices, "version": 1}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("params") == wanted:
            return manifest
    shutil.rmtree(root, ignore_errors=True)
    (root / "find").mkdir(parents=True)
    (root / "ct").mkdir(parents=True)
    from pydicom.dataset import Dataset

    t0 = time.monotonic()
    for s in range(studies):
        ds = Dataset()
        ds.SOPClassUID = SC_IMAGE
        ds.SOPInstanceUID = uid("find", s, "i")
        ds.StudyInstanceUID = uid("find", s)
        ds.SeriesInstanceUID = uid("find", s, "s")
        ds.PatientName = f"{last_name(s)}^{['JOHN', 'JANE', 'ALEX', 'MARIA'][s % 4]}"
        ds.PatientID = f"P{s:06d}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "MF"[s % 2]
        ds.StudyDate = study_date(s)
        ds.StudyTime = "101010"
        ds.AccessionNumber = f"A{s:07d}"
        ds.StudyID = str(s)
        ds.StudyDescription = "bench study"
        ds.ReferringPhysicianName = "REF^DOC"
        ds.Modality = "OT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes(range(64))
        _write(ds, root / "find" / f"{s:06d}.dcm")
    yy, xx = np.mgrid[-256:256, -256:256]
    body = ((xx**2 + (yy * 1.3) ** 2) < 200**2) * 1000
    for n in range(slices):
        ds = Dataset()
        ds.SOPClassUID = CT_IMAGE
        ds.SOPInstanceUID = uid("ct", n)
        ds.StudyInstanceUID = uid("ct")
        ds.SeriesInstanceUID = uid("ct", "s")
        ds.PatientName, ds.PatientID = "BENCH^CT", "CT0001"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240101", "080000", "CT0001"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, n + 1
        ds.ImagePositionPatient = [-256.0, -256.0, 2.0 * n]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        noise = np.random.default_rng(n).integers(0, 40, size=(512, 512))
        ds.PixelData = (body + noise + n).astype("<u2").tobytes()
        _write(ds, root / "ct" / f"{n:04d}.dcm")
    manifest = {
        "params": wanted,
        "ct_study": uid("ct"),
        "ct_series": uid("ct", "s"),
        "ct_instances": [uid("ct", n) for n in range(slices)],
        "written_seconds": round(time.monotonic() - t0, 1),
    }
    manifest_path.write_text(json.dumps(manifest))
    return manifest


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_http(port: int, proc: subprocess.Popen, path: str = "/", timeout: float = 120.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answers HTTP on {port}")


class PacsNode:
    name = "pacsnode"

    def __init__(self, workdir: Path, workers: int) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.port, self.http_port = free_port(), free_port()
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    def load(self, folders: list[Path]) -> float:
        shutil.rmtree(self.data, ignore_errors=True)
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "pacsnode.cli", "import", "--data", str(self.data), *map(str, folders)]
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pacsnode import failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
        return time.monotonic() - t0

    def start(self) -> None:
        cmd = [sys.executable, "-m", "pacsnode.cli", "serve", "--data", str(self.data), "--port", str(self.port),
               "--http-port", str(self.http_port), "--workers", str(self.workers), "--log-level", "WARNING"]  # fmt: skip
        self.log = open(self.workdir / "pacsnode.log", "ab")
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(self.http_port, self.proc, "/dicom-web/studies?limit=1")

    @property
    def root(self) -> str:
        return f"http://{HOST}:{self.http_port}/dicom-web"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
            self.proc = None
            self.log.close()


class Orthanc:
    name = "orthanc"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port, self.http_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> str | None:
        if not shutil.which("Orthanc") and not os.path.exists("/usr/sbin/Orthanc"):
            return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)"
        if not os.path.exists(ORTHANC_PLUGIN):
            return "Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
        return None

    def start(self, fresh: bool) -> None:
        storage = self.workdir / "storage"
        if fresh:
            shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "bench-dicomweb", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "StorageCompression": False, "HttpPort": self.http_port, "DicomPort": self.port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "UnknownSopClassAccepted": True, "DicomAlwaysAllowStore": True, "Plugins": [ORTHANC_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Host": f"{HOST}:{self.http_port}"},
            # Its best case for reading: no gzip of responses (on by default, it costs ~60 ms per
            # CT frame), no fsync per stored file (only the loading is faster).
            "HttpCompressionEnabled": False, "SaveJobs": False, "SyncStorageArea": False,
            "HttpThreadsCount": 50, "KeepAlive": True,
        }  # fmt: skip
        (self.workdir / "orthanc.json").write_text(json.dumps(config, indent=1))
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.log = open(self.workdir / "orthanc.log", "ab")
        self.proc = subprocess.Popen([binary, str(self.workdir / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(self.http_port, self.proc, "/system")

    def count(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"http://{HOST}:{self.http_port}/statistics", timeout=60) as rsp:
            return int(json.loads(rsp.read())["CountInstances"])

    def load(self, folders: list[Path]) -> float:
        storescu = "/usr/bin/storescu"
        t0 = time.monotonic()
        for folder in folders:
            proc = subprocess.run([storescu, "-aec", "ORTHANC", "+sd", "+r", HOST, str(self.port), str(folder)],
                                  capture_output=True, text=True)  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(f"storescu to Orthanc failed: {proc.stderr[-500:]}")
        return time.monotonic() - t0

    @property
    def root(self) -> str:
        return f"http://{HOST}:{self.http_port}/dicom-web"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
            self.log.close()


# -- measurements --------------------------------------------------------------------------


async def latency(session, urls: list[str], accept: str = "application/dicom+json") -> dict:
    times, sizes, bad = [], [], 0
    for url in urls:
        t0 = time.perf_counter()
        async with session.get(url, headers={"Accept": accept}) as rsp:
            body = await rsp.read()
            if rsp.status != 200:
                bad += 1
        times.append((time.perf_counter() - t0) * 1000)
        sizes.append(len(body))
    times.sort()
    return {
        "requests": len(urls), "errors": bad, "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2), "mean_bytes": int(statistics.mean(sizes)),
    }  # fmt: skip


async def throughput(session, urls: list[str], accept: str, concurrency: int, seconds: float) -> dict:
    done = errors = nbytes = 0
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()

    async def client(k: int) -> None:
        nonlocal done, errors, nbytes
        i = k
        while time.perf_counter() < deadline:
            async with session.get(urls[i % len(urls)], headers={"Accept": accept}) as rsp:
                body = await rsp.read()
                if rsp.status == 200:
                    done += 1
                    nbytes += len(body)
                else:
                    errors += 1
            i += concurrency

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"per_second": round(done / elapsed, 1), "MB_per_second": round(nbytes / elapsed / 1e6, 1),
            "requests": done, "errors": errors, "concurrency": concurrency}  # fmt: skip


async def measure(root: str, manifest: dict, studies: int, args) -> dict:
    import aiohttp

    rng = random.Random(7)
    patients = [rng.randrange(studies) for _ in range(args.queries)]
    qido = {
        "PatientName=LAST*": [f"{root}/studies?PatientName={last_name(p)}*" for p in patients],
        "PatientID": [f"{root}/studies?PatientID=P{p:06d}" for p in patients],
        "StudyDate range, limit 25": [
            f"{root}/studies?StudyDate={study_date(p)}-{study_date(p)[:4]}1231&limit=25" for p in patients
        ],
        "all studies, limit 101 (viewer list)": [f"{root}/studies?limit=101&offset=0"] * max(10, args.queries // 10),
    }
    study, series = manifest["ct_study"], manifest["ct_series"]
    base = f"{root}/studies/{study}/series/{series}/instances/"
    frames = [f"{base}{i}/frames/1" for i in manifest["ct_instances"]]
    instances = [f"{base}{i}" for i in manifest["ct_instances"]]
    out: dict = {"qido": {}}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        # Warm up: caches and connections, and a check that each endpoint answers.
        for url, accept in ((qido["PatientID"][0], "application/dicom+json"), (frames[0], FRAME_ACCEPT), (instances[0], INSTANCE_ACCEPT)):
            async with session.get(url, headers={"Accept": accept}) as rsp:
                body = await rsp.read()
                if rsp.status != 200:
                    raise RuntimeError(f"{url}: {rsp.status} {body[:200]!r}")
        for name, urls in qido.items():
            out["qido"][name] = await latency(session, urls)
        await throughput(session, frames, FRAME_ACCEPT, args.concurrency, 1.0)
        out["frames"] = await throughput(session, frames, FRAME_ACCEPT, args.concurrency, args.seconds)
        out["instances"] = await throughput(session, instances, INSTANCE_ACCEPT, args.concurrency, args.seconds)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small corpus, short runs (a check that all works)")
    parser.add_argument("--studies", type=int, help="studies for QIDO (default 10000; smoke 200)")
    parser.add_argument("--slices", type=int, help="CT slices for WADO-RS (default 200; smoke 20)")
    parser.add_argument("--seconds", type=float, help="duration of each throughput run (default 10; smoke 2)")
    parser.add_argument("--queries", type=int, help="QIDO requests per query kind (default 300; smoke 30)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent requests in throughput runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pacsnode worker processes")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pacsnode-bench-dicomweb"))
    parser.add_argument("--no-orthanc", action="store_true", help="measure pacsnode only")
    parser.add_argument("--rounds", type=int, help="alternating measurement rounds (default 3; smoke 1)")
    args = parser.parse_args(argv)
    args.studies = args.studies or (200 if args.smoke else 10_000)
    args.slices = args.slices or (20 if args.smoke else 200)
    args.seconds = args.seconds or (2.0 if args.smoke else 10.0)
    args.queries = args.queries or (30 if args.smoke else 300)
    args.rounds = args.rounds or (1 if args.smoke else 3)

    work = args.workdir / ("smoke" if args.smoke else "full")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    manifest = write_corpus(work / "corpus", args.studies, args.slices)
    folders = [work / "corpus" / "find", work / "corpus" / "ct"]
    print(f"corpus: {args.studies} studies + a CT of {args.slices} slices ({time.monotonic() - t0:.0f}s)", flush=True)

    servers = [PacsNode(work / "pacsnode", args.workers)]
    missing = None if args.no_orthanc else Orthanc.available()
    if missing:
        print(f"orthanc: skipped: {missing}", flush=True)
    elif not args.no_orthanc:
        servers.append(Orthanc(work / "orthanc"))
    results: dict = {"params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    try:
        for server in servers:
            (work / server.name).mkdir(exist_ok=True)
            if isinstance(server, PacsNode):
                load = server.load(folders)
                server.start()
            else:
                server.start(fresh=True)
                load = server.load(folders)
            results[server.name] = {"load_seconds": round(load, 1), "rounds": []}
            print(f"{server.name}: loaded in {load:.0f}s", flush=True)
        # Both servers run at once and are measured in alternation, round after round, so that
        # other load on the machine weighs on both alike; each figure is the median of rounds.
        for n in range(args.rounds):
            for server in servers:
                figures = asyncio.run(measure(server.root, manifest, args.studies, args))
                results[server.name]["rounds"].append(figures)
                print(f"round {n + 1}/{args.rounds} {server.name}: {figures['frames']['per_second']} frames/s, "
                      f"{figures['instances']['per_second']} instances/s", flush=True)  # fmt: skip
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        results[server.name].update(combine(results[server.name]["rounds"]))
    (work / "results.json").write_text(json.dumps(results, indent=1))
    report(results)
    return 0


def combine(rounds: list[dict]) -> dict:
    """Each figure as the median over rounds."""
    def med(values):
        return round(statistics.median(values), 2)

    out: dict = {"qido": {}}
    for query in rounds[0]["qido"]:
        out["qido"][query] = {k: med([r["qido"][query][k] for r in rounds]) for k in ("median_ms", "p95_ms", "mean_bytes")}
    for kind in ("frames", "instances"):
        out[kind] = {k: med([r[kind][k] for r in rounds]) for k in ("per_second", "MB_per_second")}
        out[kind]["errors"] = sum(r[kind]["errors"] for r in rounds)
    return out


def report(results: dict) -> None:
    names = [n for n in ("pacsnode", "orthanc") if n in results]
    print()
    print(f"{'':40s}" + "".join(f"{n:>22s}" for n in names))
    for query in results[names[0]]["qido"]:
        row = "".join(
            f"{results[n]['qido'][query]['median_ms']:>9.2f} ms (p95 {results[n]['qido'][query]['p95_ms']:>6.2f})" for n in names
        )
        print(f"QIDO {query:35s}{row}")
    for kind, unit in (("frames", "frames/s"), ("instances", "instances/s")):
        row = "".join(f"{results[n][kind]['per_second']:>12.0f} {unit:<9s}" for n in names)
        print(f"WADO-RS {kind:32s}{row}")
        row = "".join(f"{results[n][kind]['MB_per_second']:>17.0f} MB/s" for n in names)
        print(f"{'':40s}{row}")
    if len(names) == 2:
        fa, fb = results["pacsnode"]["frames"]["per_second"], results["orthanc"]["frames"]["per_second"]
        print(f"\nframes: pacsnode / orthanc = {fa / max(fb, 1e-9):.1f}x")


if __name__ == "__main__":
    sys.exit(main())
