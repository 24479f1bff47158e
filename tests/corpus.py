"""The test corpus: pydicom's bundled test files plus the pydicom-data package's files."""
import functools
import os
import warnings

import pydicom


@functools.cache
def corpus_files() -> list[str]:
    """Sorted paths of every corpus file, one per basename (pydicom's own copy wins).

    Includes the few non-DICOM files shipped with pydicom's tests (README, JSON, dumps): tests
    decide themselves what to do with them.
    """
    import data_store
    from pydicom.data.data_manager import DATA_ROOT

    # pydicom's own folder is listed directly: get_testdata_files("*") also tries to download
    # the pydicom-data files (listed below anyway), which costs ~15 s of timeouts offline.
    own = os.path.join(DATA_ROOT, "test_files")
    paths = [os.path.join(own, name) for name in sorted(os.listdir(own)) if not name.endswith(".py")]
    folder = os.path.join(os.path.dirname(data_store.__file__), "data")
    paths += [os.path.join(folder, name) for name in sorted(os.listdir(folder))]

    by_name: dict[str, str] = {}
    for path in paths:
        if os.path.isfile(path):
            by_name.setdefault(os.path.basename(path), path)
    return sorted(by_name.values())


# Corpus files whose dataset cannot be walked as their transfer syntax says: cut short, or
# (SC_rgb_jpeg) encoded in implicit VR under an explicit VR syntax.
BAD = ["MR_truncated.dcm", "rtplan_truncated.dcm", "SC_rgb_jpeg.dcm"]


def part10(path: str):
    """(pydicom dataset, transfer syntax, dataset bytes after the file meta) or None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            return None
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not ts or not all(ds.get(k) for k in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")):
        return None
    raw = open(path, "rb").read()
    if raw[128:132] != b"DICM" or os.path.basename(path) in BAD:
        return None
    with open(path, "rb") as fh:
        pydicom.filereader.read_preamble(fh, False)
        pydicom.filereader._read_file_meta_info(fh)
        offset = fh.tell()
    return ds, str(ts), raw[offset:]


@functools.cache
def part10_files() -> list[str]:
    """The corpus files whose dataset part10() can split off."""
    return [p for p in corpus_files() if part10(p) is not None]
