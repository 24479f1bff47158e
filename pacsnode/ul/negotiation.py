"""Association negotiation for the fast path, with pynetdicom's PDU classes and its
presentation context negotiation, so the answer matches pynetdicom's own acceptor."""
from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from pacsnode.dicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    QR_MODELS,
    STORAGE_SOP_CLASSES,
    VERIFICATION,
)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
# What the fast path serves; anything else (storage commitment, ...) goes to pynetdicom.
_STORAGE = frozenset(STORAGE_SOP_CLASSES.values())
FAST_ABSTRACT_SYNTAXES = _STORAGE | {VERIFICATION} | frozenset(QR_MODELS)


def decode_request(pdu: bytes) -> A_ASSOCIATE:
    rq = A_ASSOCIATE_RQ()
    rq.decode(pdu)
    return rq.to_primitive()


def suits_fast_path(request: A_ASSOCIATE, slow_syntaxes: frozenset[str]) -> bool:
    """Nothing the fast path leaves to pynetdicom: none of ``slow_syntaxes`` (SOP classes
    only pynetdicom serves) and no user identity to answer. Proposals nobody supports are
    refused the same way on either path."""
    return bool(request.presentation_context_definition_list) and not (
        any(cx.abstract_syntax in slow_syntaxes for cx in request.presentation_context_definition_list)
        or any(isinstance(i, UserIdentityNegotiation) for i in request.user_information)
    )


@dataclass
class Negotiated:
    reply: bytes
    accepted: bool
    calling_ae_title: str = ""
    called_ae_title: str = ""
    # context id -> (abstract syntax, transfer syntax)
    contexts: dict[int, tuple[str, str]] = field(default_factory=dict)
    peer_max_pdu: int = 0
    # Contexts on which we may send C-STOREs (C-GET): the requester took the SCP role.
    scu_contexts: frozenset[int] = frozenset()


def negotiate(request: A_ASSOCIATE, ae_title: str, supported: list[PresentationContext], max_pdu: int) -> Negotiated:
    calling, called = request.calling_ae_title.strip(), request.called_ae_title.strip()
    if called != ae_title.strip():
        return Negotiated(_reject(request, diagnostic=0x07), False, calling, called)  # called AE title not recognized
    if request.application_context_name != APPLICATION_CONTEXT:
        return Negotiated(_reject(request, diagnostic=0x02), False, calling, called)
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in request.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }
    results, role_replies = negotiate_as_acceptor(request.presentation_context_definition_list, supported, roles or None)
    peer_max = 0
    for item in request.user_information:
        if isinstance(item, MaximumLengthNotification):
            peer_max = item.maximum_length_received or 0
    reply = A_ASSOCIATE()
    reply.application_context_name = UID(APPLICATION_CONTEXT)
    reply.calling_ae_title = request.calling_ae_title
    reply.called_ae_title = request.called_ae_title
    reply.result = 0x00
    reply.result_source = 0x01
    reply.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl_uid = ImplementationClassUIDNotification()
    impl_uid.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    impl_name = ImplementationVersionNameNotification()
    impl_name.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    reply.user_information = [max_length, impl_uid, impl_name, *role_replies]
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(reply)
    accepted = [cx for cx in results if cx.result == 0x00]
    contexts = {cx.context_id: (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in accepted}
    scu_contexts = frozenset(cx.context_id for cx in accepted if cx.as_scu and cx.abstract_syntax in _STORAGE)
    return Negotiated(ac.encode(), True, calling, called, contexts, peer_max, scu_contexts)


def _reject(request: A_ASSOCIATE, diagnostic: int) -> bytes:
    reply = A_ASSOCIATE()
    reply.result = 0x01  # rejected permanent
    reply.result_source = 0x01  # service user
    reply.diagnostic = diagnostic
    rj = A_ASSOCIATE_RJ()
    rj.from_primitive(reply)
    return rj.encode()
