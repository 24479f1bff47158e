"""C-MOVE/C-GET logic: which stored instances an identifier asks for."""
from __future__ import annotations

from pydicom import Dataset

from pacsnode.dicom.attributes import UNIQUE_KEYS
from pacsnode.errors import InvalidQueryError
from pacsnode.index.base import Index, InstanceRecord
from pacsnode.services.query import build_matchers, query_level


class RetrieveService:
    def __init__(self, index: Index) -> None:
        self.index = index

    def instances(self, identifier: Dataset, model_root: str) -> list[InstanceRecord]:
        """Every instance under the entities the identifier names, in series/instance order."""
        level = query_level(identifier, model_root)
        unique = UNIQUE_KEYS[level]
        if not str(identifier.get(unique, "") or "").strip():
            raise InvalidQueryError(f"{unique} is required at {level} level")
        matchers = build_matchers(identifier, level)
        out: list[InstanceRecord] = []
        for view in self.index.find(level, matchers):
            out.extend(self.index.instances_under(level, view["_key"]))
        return out
