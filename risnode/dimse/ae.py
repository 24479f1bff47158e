"""The Application Entity: what the RIS negotiates and which handlers answer."""
from __future__ import annotations

from pynetdicom import AE, _config, evt

from pacsnode.dicom.uids import IMPLEMENTATION_CLASS_UID, QUERY_TRANSFER_SYNTAXES, VERIFICATION
from pacsnode.dimse.sockets import set_nodelay
from risnode.dimse import handlers
from risnode.services.ris import Ris

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"
INSTANCE_AVAILABILITY_NOTIFICATION = "1.2.840.10008.5.1.4.33"
IMPLEMENTATION_VERSION_NAME = "RISNODE_010"

# Identifiers carry patient data: our handlers log without it.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False


def build_ae(ris: Ris) -> AE:
    ae = AE(ae_title=ris.config.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.network_timeout = ris.config.network_timeout
    ae.dimse_timeout = ris.config.network_timeout
    ae.acse_timeout = 30
    ae.maximum_associations = 32
    ae.require_called_aet = True
    for uid in (VERIFICATION, MODALITY_WORKLIST_FIND, MODALITY_PERFORMED_PROCEDURE_STEP, INSTANCE_AVAILABILITY_NOTIFICATION):
        ae.add_supported_context(uid, list(QUERY_TRANSFER_SYNTAXES))
    return ae


def event_handlers(ris: Ris) -> list:
    return [
        (evt.EVT_CONN_OPEN, set_nodelay),
        (evt.EVT_C_ECHO, handlers.on_echo),
        (evt.EVT_C_FIND, handlers.on_find, [ris]),
        (evt.EVT_N_CREATE, handlers.on_n_create, [ris]),
        (evt.EVT_N_SET, handlers.on_n_set, [ris]),
    ]
