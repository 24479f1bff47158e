"""The RIS as its transports see it: one object holding the config, the store, the writer
and the completion policy. Reads run in the caller's thread; writes go to the writer."""
from __future__ import annotations

from datetime import date, datetime
from typing import Callable

from pydicom import Dataset

from risnode.config import RisConfig
from risnode.errors import InvalidRequest, NotFound
from risnode.records import STATUSES, OutboundMessage, Order, Patient
from risnode.services import availability, inbound, mpps, results, worklist
from risnode.services.context import Context
from risnode.services.status import ACTIVE, POLICIES
from risnode.store import Store, Writer
from risnode.store import orders as order_store
from risnode.store import outbound as queue
from risnode.store import patients as patient_store


class Ris:
    def __init__(self, config: RisConfig, store: Store, writer: Writer | None = None,
                 clock: Callable[[], datetime] = datetime.now) -> None:
        self.config = config
        self.store = store
        self.writer = writer
        self.clock = clock
        self.policy = POLICIES[config.completion_policy]
        # Set by the server: called after commit (any thread) when a role's queue has work.
        self.notify: Callable[[str], None] = lambda role: None

    def context(self, source: str) -> Context:
        return Context(self.config, self.clock(), source, lambda role: self.notify(role))

    # -- writes ---------------------------------------------------------------------------

    async def receive_hl7(self, raw: bytes) -> bytes:
        return await self.writer(inbound.receive, raw, self.context("hl7"))

    async def receive_oversized(self, head: bytes, size: int) -> bytes:
        return await self.writer(inbound.receive_oversized, head, size, self.context("hl7"))

    def mpps(self, request: str, uid: str, attrs: Dataset, calling_aet: str) -> str:
        """N-CREATE or N-SET from a pynetdicom thread (blocks on the writer)."""
        ctx = self.context(f"mpps {calling_aet} {uid}")
        return self.writer.run(mpps.handle, request, uid, attrs.to_json_dict(), ctx, self.policy)

    def availability(self, uid: str, attrs: Dataset, calling_aet: str) -> list[str]:
        """An Instance Availability Notification N-CREATE from a pynetdicom thread."""
        ctx = self.context(f"ian {calling_aet} {uid}")
        return self.writer.run(availability.handle, uid, attrs.to_json_dict(), ctx, self.policy)

    async def arrive(self, accession: str) -> Order:
        return await self.writer(results.arrive, accession, self.context("front desk"))

    async def report(self, accession: str, text: str, radiologist: str, report_status: str) -> Order:
        return await self.writer(results.report, accession, text, radiologist, report_status, self.context("api report"))

    def acknowledged(self, tx, message: OutboundMessage, ctx: Context) -> None:
        results.acknowledged(tx, message, ctx)

    # -- reads ----------------------------------------------------------------------------

    def patient(self, patient_id: str) -> Patient:
        with self.store.read() as tx:
            patient = patient_store.resolve(tx, patient_id)
        if patient is None:
            raise NotFound(f"no patient {patient_id}")
        return patient

    def order(self, accession: str) -> tuple[Order, Patient]:
        with self.store.read() as tx:
            return results.order_and_patient(tx, accession)

    def orders(self, status: str | None = None, day: str | None = None, modality: str | None = None) -> list[tuple[Order, Patient | None]]:
        if status and status not in STATUSES:
            raise InvalidRequest(f"status {status!r}: use one of {', '.join(STATUSES)}")
        wanted_day = parse_day(day, self.clock().date()) if day else None
        found = []
        with self.store.read() as tx:
            for order in order_store.all_orders(tx):
                if status and order.status != status:
                    continue
                if wanted_day and not order.scheduled.startswith(wanted_day.isoformat()):
                    continue
                if modality and order.modality != modality.upper():
                    continue
                found.append((order, patient_store.resolve(tx, order.patient_id)))
        return sorted(found, key=lambda pair: (pair[0].scheduled, pair[0].accession))

    def outbound(self, state: str | None = None) -> list[OutboundMessage]:
        with self.store.read() as tx:
            return queue.listing(tx, state)

    def superbill(self, accession: str) -> dict:
        order, patient = self.order(accession)
        return results.superbill(order, patient)

    def worklist(self, query: Dataset, calling_aet: str) -> list[Dataset]:
        aet = calling_aet if self.config.mwl_match_calling_aet else None
        with self.store.read() as tx:
            entries = []
            for order in order_store.all_orders(tx):
                patient = patient_store.resolve(tx, order.patient_id) if order.status in ACTIVE else None
                if patient is not None:
                    entries.append((patient, order))
        return list(worklist.find(entries, query, aet))


def parse_day(text: str, today: date) -> date:
    """``today``, YYYY-MM-DD or YYYYMMDD."""
    if text == "today":
        return today
    try:
        return date.fromisoformat(text) if "-" in text else datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise InvalidRequest(f"date {text!r}: use YYYY-MM-DD, YYYYMMDD or today") from None
