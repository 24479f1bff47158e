"""A-ASSOCIATE request parsing and accept/reject encoding (PS3.8 9.3.2-9.3.4) without
pynetdicom's object layer, which spends ~10 ms of UID validation on a 128-context request.

The reference is pynetdicom: tests/unit/test_acse.py proves, over random proposals, that
``negotiate`` answers byte for byte what pynetdicom's decoder, ``negotiate_as_acceptor``
and A-ASSOCIATE-AC encoder answer.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pynetdicom.presentation import SCP_SCU_ROLES

from pacsnode.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, QR_MODELS, STORAGE_SOP_CLASSES, VERIFICATION
from pacsnode.ul.pdu import ProtocolError

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
# What the fast path serves; anything else the AE supports (storage commitment...) is pynetdicom's.
FAST_ABSTRACT_SYNTAXES = frozenset(STORAGE_SOP_CLASSES.values()) | {VERIFICATION} | frozenset(QR_MODELS)

ACCEPTANCE = 0x00
USER_REJECTION = 0x01
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04

_ITEM = struct.Struct(">BxH")


@dataclass
class AssociateRequest:
    called_ae_title: str
    calling_ae_title: str
    application_context: str
    # (context id, abstract syntax, proposed transfer syntaxes), in proposal order
    contexts: list[tuple[int, str, list[str]]] = field(default_factory=list)
    max_pdu: int = 0
    # SOP class -> (SCU role, SCP role) from SCP/SCU Role Selection items
    roles: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    user_identity: bool = False


@dataclass(frozen=True)
class Supported:
    """What we accept for one abstract syntax: syntaxes in our order of preference, roles."""

    transfer_syntaxes: tuple[str, ...]
    scu_role: bool | None = None
    scp_role: bool | None = None


@dataclass
class Negotiated:
    reply: bytes
    accepted: bool
    calling_ae_title: str = ""
    called_ae_title: str = ""
    # context id -> (abstract syntax, transfer syntax)
    contexts: dict[int, tuple[str, str]] = field(default_factory=dict)
    peer_max_pdu: int = 0
    # Contexts on which we may send (C-GET sub-operations): we may act as SCU there.
    scu_contexts: frozenset[int] = frozenset()


def _uid(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


def _items(body: bytes, pos: int, end: int):
    while pos < end:
        if end - pos < 4:
            raise ProtocolError("truncated item header in A-ASSOCIATE-RQ")
        item_type, length = _ITEM.unpack_from(body, pos)
        if pos + 4 + length > end:
            raise ProtocolError(f"item {item_type:#04x} runs past the end of the A-ASSOCIATE-RQ")
        yield item_type, pos + 4, pos + 4 + length
        pos += 4 + length


def parse_associate_rq(raw: bytes) -> AssociateRequest:
    """Parse a whole A-ASSOCIATE-RQ PDU (header included)."""
    if len(raw) < 74 or raw[0] != 0x01:
        raise ProtocolError("not an A-ASSOCIATE-RQ")
    end = min(len(raw), 6 + struct.unpack_from(">I", raw, 2)[0])
    request = AssociateRequest(
        called_ae_title=raw[10:26].decode("ascii", "replace").strip(),
        calling_ae_title=raw[26:42].decode("ascii", "replace").strip(),
        application_context="",
    )
    for item_type, start, stop in _items(raw, 74, end):
        if item_type == 0x10:
            request.application_context = _uid(raw[start:stop])
        elif item_type == 0x20:
            if stop - start < 4:
                raise ProtocolError("presentation context item too short")
            abstract, syntaxes = "", []
            for sub_type, s, e in _items(raw, start + 4, stop):
                if sub_type == 0x30:
                    abstract = _uid(raw[s:e])
                elif sub_type == 0x40:
                    syntaxes.append(_uid(raw[s:e]))
            request.contexts.append((raw[start], abstract, syntaxes))
        elif item_type == 0x50:
            for sub_type, s, e in _items(raw, start, stop):
                if sub_type == 0x51 and e - s >= 4:
                    request.max_pdu = struct.unpack_from(">I", raw, s)[0]
                elif sub_type == 0x54 and e - s >= 4:
                    n = struct.unpack_from(">H", raw, s)[0]
                    if s + 2 + n + 2 > e:
                        raise ProtocolError("role selection item too short")
                    request.roles[_uid(raw[s + 2 : s + 2 + n])] = (bool(raw[s + 2 + n]), bool(raw[s + 3 + n]))
                elif sub_type == 0x58:
                    request.user_identity = True
    return request


def suits_fast_path(request: AssociateRequest, slow_syntaxes: frozenset[str]) -> bool:
    """Nothing the fast path leaves to pynetdicom: none of ``slow_syntaxes`` (SOP classes
    only pynetdicom serves) and no user identity to answer. Proposals nobody supports are
    refused the same way on either path."""
    return bool(request.contexts) and not (
        request.user_identity or any(abstract in slow_syntaxes for _, abstract, _ in request.contexts)
    )


def supported_from(contexts) -> dict[str, Supported]:
    """Our supported contexts (pynetdicom PresentationContext objects) as a lookup table."""
    return {
        str(cx.abstract_syntax): Supported(tuple(str(ts) for ts in cx.transfer_syntax), cx.scu_role, cx.scp_role)
        for cx in contexts
    }


def _item(item_type: int, value: bytes) -> bytes:
    return _ITEM.pack(item_type, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def reject(result: int, source: int, diagnostic: int) -> bytes:
    return bytes([0x03, 0, 0, 0, 0, 4, 0, result, source, diagnostic])


def negotiate(request: AssociateRequest, ae_title: str, supported: dict[str, Supported], max_pdu: int) -> Negotiated:
    """Accept or reject the request as pynetdicom's acceptor would, and encode the answer."""
    calling, called = request.calling_ae_title, request.called_ae_title
    if called != ae_title.strip():
        return Negotiated(reject(0x01, 0x01, 0x07), False, calling, called)  # called AE title not recognized
    if request.application_context != APPLICATION_CONTEXT:
        return Negotiated(reject(0x01, 0x01, 0x02), False, calling, called)
    results: dict[int, tuple[int, str, str]] = {}  # id -> (result, abstract, syntax)
    contexts: dict[int, tuple[str, str]] = {}
    scu_contexts = set()
    role_replies: dict[str, tuple[bool, bool]] = {}
    # pynetdicom keys proposals by (id, abstract): a repeated pair counts once, the last one.
    proposals = {(cx_id, abstract): syntaxes for cx_id, abstract, syntaxes in request.contexts}
    for (cx_id, abstract), syntaxes in proposals.items():
        ours = supported.get(abstract)
        if ours is None:
            results[cx_id] = (ABSTRACT_SYNTAX_NOT_SUPPORTED, abstract, syntaxes[0] if syntaxes else "")
            continue
        chosen = next((ts for ts in ours.transfer_syntaxes if ts in syntaxes), None)
        if chosen is None:
            results[cx_id] = (TRANSFER_SYNTAXES_NOT_SUPPORTED, abstract, syntaxes[0] if syntaxes else "")
            continue
        rq_roles = request.roles.get(abstract)
        if ours.scu_role is None or ours.scp_role is None:
            as_scu, as_scp, rq_roles = False, True, None
        else:
            outcome = SCP_SCU_ROLES[rq_roles or (None, None)][(ours.scu_role, ours.scp_role)]
            as_scu, as_scp = outcome[2], outcome[3]
        if not as_scu and not as_scp:
            results[cx_id] = (USER_REJECTION, abstract, chosen)
            continue
        results[cx_id] = (ACCEPTANCE, abstract, chosen)
        contexts[cx_id] = (abstract, chosen)
        if as_scu:
            scu_contexts.add(cx_id)
        if rq_roles is not None:
            role_replies[abstract] = (
                False if rq_roles[0] is False else ours.scu_role,
                False if rq_roles[1] is False else ours.scp_role,
            )
    items = [_item(0x10, APPLICATION_CONTEXT.encode())]
    for cx_id in sorted(results):
        result, _, syntax = results[cx_id]
        items.append(_item(0x21, bytes([cx_id, 0, result, 0]) + _item(0x40, syntax.encode())))
    user = [
        _item(0x51, struct.pack(">I", max_pdu)),
        _item(0x52, IMPLEMENTATION_CLASS_UID.encode()),
        _item(0x55, IMPLEMENTATION_VERSION_NAME.encode()),
    ]
    for uid in sorted(role_replies):
        scu, scp = role_replies[uid]
        user.append(_item(0x54, struct.pack(">H", len(uid)) + uid.encode() + bytes([bool(scu), bool(scp)])))
    items.append(_item(0x50, b"".join(user)))
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\x00" * 32 + b"".join(items)
    reply = struct.pack(">BxI", 0x02, len(body)) + body
    return Negotiated(reply, True, calling, called, contexts, request.max_pdu, frozenset(scu_contexts))
