"""DICOM wire formats and dictionaries: no I/O, no index, no network."""
