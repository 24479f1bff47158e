"""The interface every index (LMDB now, PostgreSQL later) implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterator

from pacsnode.dicom.matching import Matcher


@dataclass
class InstanceRecord:
    """What the index keeps of one stored instance; ``attrs`` maps keyword -> value at all levels."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    patient_key: str
    transfer_syntax: str
    blob_id: str
    size: int
    digest: str  # services.digest: of the transfer syntax and dataset bytes
    attrs: dict = field(default_factory=dict)
    stored_at: float = 0.0
    # The identity check's outcome when it needs recording (services.identity): e.g.
    # {"outcome": "quarantined", ...}. A quarantined instance is held but kept out of the
    # patient/study/series hierarchy (C-FIND, C-MOVE, C-GET) until it is resolved.
    identity: dict | None = None
    # Part 10 bytes the index keeps itself, written in the transaction that indexes the
    # instance (small instances: one durable commit instead of a segment flush and a commit).
    inline: bytes | None = field(default=None, repr=False)

    @property
    def quarantined(self) -> bool:
        return bool(self.identity and self.identity.get("outcome") == "quarantined")


@dataclass
class AddResult:
    added: bool
    # The record already held under this SOP Instance UID when ``added`` is False.
    existing: InstanceRecord | None = None


class Index(ABC):
    def keeps_inline(self, size: int) -> bool:
        """Whether this index would keep a blob of ``size`` bytes itself (``InstanceRecord.inline``)."""
        return False

    @abstractmethod
    def get_instance(self, sop_instance_uid: str, include_quarantined: bool = False) -> InstanceRecord | None:
        """The instance, if the archive makes it available (a quarantined one only on request)."""

    @abstractmethod
    def get_instances(self, sop_instance_uids: list[str]) -> dict[str, InstanceRecord]:
        """The indexed records among these UIDs, in one read, quarantined ones included
        (duplicate detection, storage commitment: the archive holds them)."""

    @abstractmethod
    def add_instances(
        self, records: list[InstanceRecord], late: Callable[[], list[InstanceRecord]] | None = None
    ) -> list[AddResult]:
        """Add all in one durable transaction; a UID already indexed changes nothing.

        ``late``, when given, is called once the transaction holds the write lock and returns
        more records for it (those that arrived while another writer committed); the results
        cover ``records`` then those, in order.
        """

    def add_instance(self, record: InstanceRecord) -> AddResult:
        return self.add_instances([record])[0]

    @abstractmethod
    def replace_instance(self, record: InstanceRecord) -> InstanceRecord:
        """Point an existing SOP Instance UID at new content; returns the old record."""

    @abstractmethod
    def find(self, level: str, matchers: dict[str, Matcher]) -> Iterator[dict]:
        """Yield a view (keyword -> value, all upper levels and computed keys included)
        of every entity at ``level`` that all matchers accept."""

    @abstractmethod
    def instances_under(self, level: str, key: str) -> Iterator[InstanceRecord]:
        """Every instance of the patient/study/series/instance with this unique key."""

    @abstractmethod
    def close(self) -> None: ...
