"""Thin DIMSE handlers: decode the request, call a service, turn any error into a status."""
from __future__ import annotations

import logging
import time
from typing import Iterator

from pydicom import Dataset
from pynetdicom import evt

from pacsnode.dicom.status import (
    CANCEL,
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    PENDING,
    SUCCESS,
    UNABLE_TO_PROCESS,
    status_dataset,
)
from pacsnode.dicom.uids import PATIENT_ROOT_FIND
from pacsnode.errors import PacsError
from pacsnode.services.archive import Archive
from pacsnode.services.store import DUPLICATE

LOGGER = logging.getLogger("pacsnode.association")


# Per-association counters for the one log line written when the connection closes.
_STATS: dict[int, dict] = {}


def _stats(event: evt.Event) -> dict:
    return _STATS.setdefault(id(event.assoc), {"t0": time.monotonic(), "stored": 0, "dup": 0, "failed": 0, "find": 0})


def on_accepted(event: evt.Event) -> None:
    _stats(event)


def on_rejected(event: evt.Event) -> None:
    rq = event.assoc.requestor
    # The title the peer called (acceptor.ae_title is always ours, even when that is the reason).
    called = rq.primitive.called_ae_title if rq.primitive is not None else event.assoc.acceptor.ae_title
    LOGGER.warning("association from %s (%s:%s) to %s rejected", rq.ae_title, rq.address, rq.port, called)


def on_closed(event: evt.Event) -> None:
    st = _STATS.pop(id(event.assoc), None)
    if st is None:
        return
    rq = event.assoc.requestor
    end = "aborted" if event.assoc.is_aborted else "released"
    LOGGER.info(
        "association %s (%s:%s) %s after %.2fs: stored %d, duplicate %d, failed %d, queries %d",
        rq.ae_title,
        rq.address,
        rq.port,
        end,
        time.monotonic() - st["t0"],
        st["stored"],
        st["dup"],
        st["failed"],
        st["find"],
    )


def on_echo(event: evt.Event) -> int:
    return SUCCESS


def on_store(event: evt.Event, archive: Archive) -> Dataset | int:
    req = event.request
    stats = _stats(event)
    try:
        outcome = archive.store.store(
            req.DataSet.getvalue(),
            event.context.transfer_syntax,
            req.AffectedSOPClassUID,
            req.AffectedSOPInstanceUID,
            event.assoc.requestor.ae_title,
        )
    except PacsError as exc:
        stats["failed"] += 1
        LOGGER.warning("C-STORE %s from %s refused: %s", req.AffectedSOPInstanceUID, event.assoc.requestor.ae_title, exc)
        return status_dataset(exc.dimse_status, exc.comment)
    except OSError as exc:
        stats["failed"] += 1
        LOGGER.error("C-STORE %s: storage error: %s", req.AffectedSOPInstanceUID, exc)
        return status_dataset(OUT_OF_RESOURCES, "storage error; see the node's log")
    except Exception:
        stats["failed"] += 1
        LOGGER.exception("C-STORE %s failed", req.AffectedSOPInstanceUID)
        return status_dataset(CANNOT_UNDERSTAND, "cannot process the dataset")
    stats["dup" if outcome.result == DUPLICATE else "stored"] += 1
    return SUCCESS


def on_find(event: evt.Event, archive: Archive) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    _stats(event)["find"] += 1
    model_root = "PATIENT" if event.request.AffectedSOPClassUID == PATIENT_ROOT_FIND else "STUDY"
    try:
        identifier = event.identifier
        for response in archive.query.find(identifier, model_root):
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, response
    except PacsError as exc:
        LOGGER.warning("C-FIND refused: %s", exc)
        yield status_dataset(exc.dimse_status, exc.comment), None
        return
    except Exception:
        LOGGER.exception("C-FIND failed")
        yield status_dataset(UNABLE_TO_PROCESS, "unable to process the query"), None
        return
    yield SUCCESS, None
