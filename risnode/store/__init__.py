"""LMDB storage: one environment, named databases, msgpack values; no HL7 or DICOM here."""
from risnode.store.db import Store, Tx
from risnode.store.writer import Writer

__all__ = ["Store", "Tx", "Writer"]
