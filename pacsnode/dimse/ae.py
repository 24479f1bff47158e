"""The Application Entity: what the node negotiates and which handlers answer."""
from __future__ import annotations

from pynetdicom import AE, _config, evt

from pacsnode.dicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    QR_MODELS,
    QUERY_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION,
)
from pacsnode.dimse import commitment, handlers, mpps, retrieve_scp
from pacsnode.dimse.sockets import set_nodelay
from pacsnode.services.archive import Archive

# Retrieve sends stored files as they are (no decode) when the peer accepted their syntax.
_config.STORE_SEND_CHUNKED_DATASET = True
# Identifiers are logged by our own handlers, without patient data at INFO.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False


class PacsAE(AE):
    """An AE that carries the archive its services work on."""

    def __init__(self, archive: Archive) -> None:
        super().__init__(ae_title=archive.config.ae_title)
        self.archive = archive


def build_ae(archive: Archive) -> PacsAE:
    cfg = archive.config
    ae = PacsAE(archive)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_pdu_size = cfg.max_pdu
    ae.network_timeout = cfg.network_timeout
    ae.dimse_timeout = cfg.dimse_timeout
    ae.acse_timeout = 30
    ae.maximum_associations = 64
    # An association addressed to another AE title is refused (A-ASSOCIATE-RJ, reason 7).
    ae.require_called_aet = True
    ae.add_supported_context(VERIFICATION, list(QUERY_TRANSFER_SYNTAXES))
    for uid in STORAGE_SOP_CLASSES.values():
        # Both roles: we store what peers send, and send back over C-GET associations.
        ae.add_supported_context(uid, list(STORAGE_TRANSFER_SYNTAXES), scu_role=True, scp_role=True)
    for uid in QR_MODELS:
        ae.add_supported_context(uid, list(QUERY_TRANSFER_SYNTAXES))
    # Storage Commitment Push Model: we are the SCP (reports may go out on new associations).
    ae.add_supported_context(commitment.STORAGE_COMMITMENT_PUSH, list(QUERY_TRANSFER_SYNTAXES))
    # MPPS: what a step produced tells when its study is complete (services.completion).
    ae.add_supported_context(mpps.MPPS_SOP_CLASS, list(QUERY_TRANSFER_SYNTAXES))
    retrieve_scp.install()
    return ae


def event_handlers(archive: Archive) -> list:
    return [
        (evt.EVT_CONN_OPEN, set_nodelay),
        (evt.EVT_ACCEPTED, handlers.on_accepted),
        (evt.EVT_REJECTED, handlers.on_rejected),
        (evt.EVT_CONN_CLOSE, handlers.on_closed),
        (evt.EVT_C_ECHO, handlers.on_echo),
        (evt.EVT_C_STORE, handlers.on_store, [archive]),
        (evt.EVT_C_FIND, handlers.on_find, [archive]),
        (evt.EVT_N_ACTION, commitment.on_n_action, [archive]),
        (evt.EVT_N_CREATE, mpps.on_n_create, [archive]),
        (evt.EVT_N_SET, mpps.on_n_set, [archive]),
    ]
