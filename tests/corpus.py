"""The test corpus: pydicom's bundled test files plus the pydicom-data package's files."""
import functools
import os


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
