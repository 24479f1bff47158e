"""Thin DIMSE handlers: decode, call the RIS, and turn any error into a status (one choke
point per service, like pynetdicom's ``attempt``)."""
from __future__ import annotations

import logging
from typing import Iterator

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt

from pacsnode.dicom.status import (
    CANCEL,
    PENDING,
    SUCCESS,
    UNABLE_TO_PROCESS,
    status_dataset,
)
from risnode.errors import MppsError
from risnode.services import mpps
from risnode.services.availability import INSTANCE_AVAILABILITY_NOTIFICATION
from risnode.services.orders import RIS_UID_ROOT
from risnode.services.ris import Ris

LOGGER = logging.getLogger("risnode.association")



def on_echo(event: evt.Event) -> int:
    return SUCCESS


def on_find(event: evt.Event, ris: Ris) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    calling = event.assoc.requestor.ae_title
    try:
        answers = ris.worklist(event.identifier, calling)
    except Exception:
        LOGGER.exception("worklist query from %s failed", calling)
        yield status_dataset(UNABLE_TO_PROCESS, "unable to process the query"), None
        return
    LOGGER.info("worklist query from %s: %d step(s)", calling, len(answers))
    for answer in answers:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, answer
    yield SUCCESS, None


def _mpps(event: evt.Event, ris: Ris, request: str, uid: str, attrs: Dataset) -> Dataset:
    calling = event.assoc.requestor.ae_title
    try:
        state = ris.mpps(request, uid, attrs, calling)
    except MppsError as exc:
        LOGGER.warning("MPPS %s %s from %s refused: %s", request, uid, calling, exc.comment)
        final = exc.status == mpps.PROCESSING_FAILURE and "no longer" in exc.comment
        return status_dataset(exc.status, exc.comment, mpps.MAY_NO_LONGER_BE_UPDATED if final else None)
    except Exception:
        LOGGER.exception("MPPS %s %s from %s failed", request, uid, calling)
        return status_dataset(mpps.PROCESSING_FAILURE, "cannot process the request")
    LOGGER.info("MPPS %s from %s: %s", request, calling, state)
    return status_dataset(SUCCESS)


def on_ian(event: evt.Event, ris: Ris) -> Dataset:
    """Instance Availability Notification from the PACS: the study is complete."""
    calling = event.assoc.requestor.ae_title
    uid = str(event.request.AffectedSOPInstanceUID or "") or generate_uid(prefix=RIS_UID_ROOT)
    try:
        orders = ris.availability(uid, event.attribute_list, calling)
    except MppsError as exc:
        LOGGER.warning("IAN %s from %s refused: %s", uid, calling, exc.comment)
        return status_dataset(exc.status, exc.comment)
    except Exception:
        LOGGER.exception("IAN %s from %s failed", uid, calling)
        return status_dataset(mpps.PROCESSING_FAILURE, "cannot process the notification")
    LOGGER.info("IAN from %s: %d order(s)", calling, len(orders))
    return status_dataset(SUCCESS)


def on_n_create(event: evt.Event, ris: Ris) -> tuple[Dataset, Dataset | None]:
    if event.request.AffectedSOPClassUID == INSTANCE_AVAILABILITY_NOTIFICATION:
        return on_ian(event, ris), None
    given = str(event.request.AffectedSOPInstanceUID or "")
    uid = given or generate_uid(prefix=RIS_UID_ROOT)
    status = _mpps(event, ris, "N-CREATE", uid, event.attribute_list)
    if given or status.Status != SUCCESS:
        return status, None
    reply = Dataset()
    reply.AffectedSOPInstanceUID = uid  # PS3.7 10.1.5.1.4: the SCP names the instance it created
    return status, reply


def on_n_set(event: evt.Event, ris: Ris) -> tuple[Dataset, Dataset | None]:
    return _mpps(event, ris, "N-SET", str(event.request.RequestedSOPInstanceUID), event.modification_list), None
