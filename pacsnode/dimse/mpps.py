"""MPPS SCP handlers (N-CREATE, N-SET) over ``services.mpps``: one choke point turns any
error into a status."""
from __future__ import annotations

import logging

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt

from pacsnode.dicom.status import SUCCESS, status_dataset
from pacsnode.dicom.uids import UID_ROOT
from pacsnode.services import mpps

LOGGER = logging.getLogger(__name__)

MPPS_SOP_CLASS = mpps.MPPS_SOP_CLASS


def _apply(event: evt.Event, archive, request: str, uid: str, attrs: Dataset) -> Dataset:
    calling = event.assoc.requestor.ae_title
    try:
        mpps.handle(archive.tables, request, uid, attrs, calling, archive.config.mpps_forward)
    except mpps.MppsError as exc:
        LOGGER.warning("MPPS %s %s from %s refused: %s", request, uid, calling, exc.comment)
        return status_dataset(exc.dimse_status, exc.comment, exc.error_id)
    except Exception:
        LOGGER.exception("MPPS %s %s from %s failed", request, uid, calling)
        return status_dataset(mpps.PROCESSING_FAILURE, "cannot process the request")
    return status_dataset(SUCCESS)


def on_n_create(event: evt.Event, archive) -> tuple[Dataset, Dataset | None]:
    if event.request.AffectedSOPClassUID != mpps.MPPS_SOP_CLASS:
        return status_dataset(0x0122, "SOP class not supported"), None
    given = str(event.request.AffectedSOPInstanceUID or "")
    uid = given or generate_uid(prefix=UID_ROOT + "4.")
    status = _apply(event, archive, "N-CREATE", uid, event.attribute_list)
    if given or status.Status != SUCCESS:
        return status, None
    reply = Dataset()
    reply.AffectedSOPInstanceUID = uid  # PS3.7 10.1.5.1.4: the SCP names the instance it created
    return status, reply


def on_n_set(event: evt.Event, archive) -> tuple[Dataset, Dataset | None]:
    return _apply(event, archive, "N-SET", str(event.request.RequestedSOPInstanceUID), event.modification_list), None
