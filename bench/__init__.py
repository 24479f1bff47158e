"""Benchmarks of pacsnode against reference DICOM servers (see bench/README.md)."""
