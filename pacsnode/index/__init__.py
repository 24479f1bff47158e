"""The archive index: patient/study/series/instance records and the keys C-FIND needs."""
from pacsnode.index.base import Index, InstanceRecord
from pacsnode.index.lmdb_index import LmdbIndex

__all__ = ["Index", "InstanceRecord", "LmdbIndex"]
