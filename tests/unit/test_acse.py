"""pacsnode.ul.acse against its reference, pynetdicom: the same answer, byte for byte."""
from __future__ import annotations

import random

import pytest
from pydicom.uid import UID
from pynetdicom import build_context, build_role
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import negotiate_as_acceptor

from pacsnode.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, STORAGE_SOP_CLASSES, STORAGE_TRANSFER_SYNTAXES
from pacsnode.ul import acse
from pacsnode.ul.pdu import ProtocolError

STORAGE = sorted(STORAGE_SOP_CLASSES.values())
QR = ["1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.3", "1.2.840.10008.1.1"]
SYNTAXES = list(STORAGE_TRANSFER_SYNTAXES) + ["1.2.3.4.99"]


def _supported_pynetdicom():
    contexts = [build_context(uid, list(STORAGE_TRANSFER_SYNTAXES)) for uid in STORAGE[:60]]
    for cx in contexts:
        cx.scu_role, cx.scp_role = True, True
    contexts += [build_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]) for uid in QR]
    return contexts


def _supported_ours(contexts):
    return {str(cx.abstract_syntax): acse.Supported(tuple(map(str, cx.transfer_syntax)), cx.scu_role, cx.scp_role) for cx in contexts}


def _random_request(rng: random.Random, called: str = "PACSNODE") -> bytes:
    p = A_ASSOCIATE()
    p.application_context_name = acse.APPLICATION_CONTEXT
    p.calling_ae_title, p.called_ae_title = "PEER" + str(rng.randint(0, 99)), called
    contexts = []
    for n in range(rng.randint(1, 128)):
        abstract = rng.choice(STORAGE + QR + ["1.2.3.4.5.6.7"])
        cx = build_context(abstract, rng.sample(SYNTAXES, rng.randint(1, 4)))
        cx.context_id = 2 * n + 1
        contexts.append(cx)
    p.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = rng.choice([0, 16384, 1 << 20])
    p.user_information = [max_length]
    for abstract in rng.sample(sorted({str(c.abstract_syntax) for c in contexts}), rng.randint(0, 3)):
        scu, scp = rng.choice([(True, False), (False, True), (True, True)])
        p.user_information.append(build_role(abstract, scu_role=scu, scp_role=scp))
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(p)
    return rq.encode()


def _pynetdicom_answer(raw: bytes, supported, max_pdu: int):
    rq = A_ASSOCIATE_RQ()
    rq.decode(raw)
    request = rq.to_primitive()
    roles = {i.sop_class_uid: (i.scu_role, i.scp_role) for i in request.user_information if hasattr(i, "scp_role")}
    results, role_items = negotiate_as_acceptor(request.presentation_context_definition_list, supported, roles or None)
    reply = A_ASSOCIATE()
    reply.application_context_name = UID(acse.APPLICATION_CONTEXT)
    reply.calling_ae_title, reply.called_ae_title = request.calling_ae_title, request.called_ae_title
    reply.result, reply.result_source = 0, 1
    reply.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl_uid = ImplementationClassUIDNotification()
    impl_uid.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    impl_name = ImplementationVersionNameNotification()
    impl_name.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    reply.user_information = [max_length, impl_uid, impl_name, *role_items]
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(reply)
    accepted = [cx for cx in results if cx.result == 0]
    return ac.encode(), {cx.context_id: (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in accepted}, {
        cx.context_id for cx in accepted if cx.as_scu
    }


@pytest.mark.parametrize("seed", range(60))
def test_same_answer_as_pynetdicom(seed):
    rng = random.Random(seed)
    supported = _supported_pynetdicom()
    raw = _random_request(rng)
    reply, contexts, scu = _pynetdicom_answer(raw, supported, 4 << 20)
    ours = acse.negotiate(acse.parse_associate_rq(raw), "PACSNODE", _supported_ours(supported), 4 << 20)
    assert ours.accepted
    assert ours.contexts == contexts
    assert ours.scu_contexts == scu
    assert ours.reply == reply


def test_rejections():
    rng = random.Random(1)
    ours = acse.negotiate(acse.parse_associate_rq(_random_request(rng, called="OTHER")), "PACSNODE", {}, 16384)
    assert not ours.accepted and ours.reply == bytes([3, 0, 0, 0, 0, 4, 0, 1, 1, 7])


def _cut(raw: bytes, at: int) -> bytes:
    return raw[:2] + (at - 6).to_bytes(4, "big") + raw[6:at]


@pytest.mark.parametrize("at", [10, 73, 80, 120])
def test_truncated_requests_are_protocol_errors(at):
    # 10 and 73: no room for the fixed fields; 80 and 120: inside an item.
    with pytest.raises(ProtocolError):
        acse.parse_associate_rq(_cut(_random_request(random.Random(2)), at))


def test_a_request_with_no_items_proposes_nothing():
    request = acse.parse_associate_rq(_cut(_random_request(random.Random(2)), 74))
    assert request.contexts == [] and request.application_context == ""
    assert not acse.negotiate(request, "PACSNODE", {}, 16384).accepted


def test_fast_path_routing():
    slow = frozenset({"1.2.840.10008.1.20.1"})  # storage commitment: pynetdicom's

    def request(*abstracts: str, user_identity: bool = False) -> acse.AssociateRequest:
        contexts = [(2 * n + 1, a, ["1.2.840.10008.1.2"]) for n, a in enumerate(abstracts)]
        return acse.AssociateRequest("PACSNODE", "PEER", acse.APPLICATION_CONTEXT, contexts, user_identity=user_identity)

    assert acse.suits_fast_path(request(STORAGE[0], "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.2"), slow)
    assert acse.suits_fast_path(request("1.2.3.4.5.6"), slow)  # refused the same way on either path
    assert not acse.suits_fast_path(request(STORAGE[0], "1.2.840.10008.1.20.1"), slow)
    assert not acse.suits_fast_path(request(STORAGE[0], user_identity=True), slow)
    assert not acse.suits_fast_path(request(), slow)
