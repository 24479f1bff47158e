"""Every inbound HL7 message: parse, apply once, store it with its ACK, answer.

Runs in the writer thread, inside the transaction that also holds the message's effects,
so the ACK leaves only after both are on disk. A handler's error rolls back its own
writes (a nested transaction) but the message and its AE are still stored.
"""
from __future__ import annotations

import logging

from risnode.errors import APPLICATION_INTERNAL_ERROR, UNSUPPORTED_EVENT_CODE, UNSUPPORTED_MESSAGE_TYPE, Hl7Error, RisError
from risnode.hl7 import build, charsets
from risnode.hl7.message import Header, Hl7Message, parse, read_header
from risnode.services import adt, orders
from risnode.services.context import Context, next_control_id
from risnode.store import messages
from risnode.store.db import Tx

LOGGER = logging.getLogger(__name__)

HANDLERS = {
    ("ADT", "A01"): adt.register,
    ("ADT", "A04"): adt.register,
    ("ADT", "A08"): adt.register,
    ("ADT", "A40"): adt.merge,
    ("ORM", "O01"): orders.receive,
    ("OMI", "O23"): orders.receive,
}
_TYPES = {t for t, _ in HANDLERS}


def _ack(tx: Tx, header: Header, ctx: Context, code: str, error: Hl7Error | None) -> bytes:
    text = build.ack(header, ctx.config.application, ctx.config.facility, next_control_id(tx, ctx), ctx.now, code, error)
    codec = charsets.codec(header.charset) or "ascii"
    return text.encode(codec, "replace")


def receive(tx: Tx, raw: bytes, ctx: Context) -> bytes:
    try:
        msg = parse(raw)
    except Hl7Error as error:
        return _reject(tx, raw, read_header(raw), error, ctx)
    key = msg.header.control_key
    prior = messages.get(tx, key)
    if prior is not None:
        if prior["raw"] != msg.raw:
            LOGGER.warning("control ID %s from %s reused with other content: answered as before", msg.header.control_id, msg.header.sending_app)
        return prior["ack"]
    code, error = _apply(tx, msg, ctx)
    ack = _ack(tx, msg.header, ctx, code, error)
    messages.put(tx, key, {
        "received": ctx.at, "kind": msg.kind, "raw": msg.raw, "ack": ack, "code": code,
        "error": f"{error.location}: {error.text}" if error else "",
    })
    # The error text may name a patient: INFO gets its location and code only.
    LOGGER.info("%s %s from %s: %s%s", msg.kind, msg.header.control_id, msg.header.sending_app or "?", code,
                f" ({error.location or 'message'}, HL7 error {error.code})" if error else "")
    if error:
        LOGGER.debug("%s %s: %s", msg.kind, msg.header.control_id, error.text)
    return ack


def _apply(tx: Tx, msg: Hl7Message, ctx: Context) -> tuple[str, Hl7Error | None]:
    header = msg.header
    handler = HANDLERS.get((header.message_type, header.event))
    if handler is None:
        if header.message_type in _TYPES:
            return "AR", Hl7Error.reject(f"{msg.kind} not supported", "MSH-9.2", UNSUPPORTED_EVENT_CODE)
        return "AR", Hl7Error.reject(f"message type {header.message_type} not supported", "MSH-9", UNSUPPORTED_MESSAGE_TYPE)
    try:
        with tx.savepoint() as child:
            handler(child, msg, Context(ctx.config, ctx.now, f"hl7 {msg.kind} {header.control_id}", ctx.notify))
    except Hl7Error as error:
        return error.ack_code, error
    except RisError as exc:
        return "AE", Hl7Error(str(exc))
    except Exception:
        LOGGER.exception("%s %s failed", msg.kind, header.control_id)
        return "AE", Hl7Error("internal error; see the RIS log", "", APPLICATION_INTERNAL_ERROR)
    return "AA", None


def _reject(tx: Tx, raw: bytes, header: Header, error: Hl7Error, ctx: Context) -> bytes:
    ack = _ack(tx, header, ctx, error.ack_code, error)
    messages.put_reject(tx, ctx.at, {"received": ctx.at, "raw": raw[:65536], "size": len(raw), "ack": ack, "error": error.text})
    LOGGER.warning("message %r refused: %s", header.control_id, error.text)
    return ack


def receive_oversized(tx: Tx, head: bytes, size: int, ctx: Context) -> bytes:
    """AR for a block over max_message_bytes; its head still names the control ID."""
    error = Hl7Error.reject(f"message of {size} bytes exceeds max_message_bytes {ctx.config.max_message_bytes}", "MSH", APPLICATION_INTERNAL_ERROR)
    return _reject(tx, head, read_header(head), error, ctx)
