"""HL7 parsing (header from raw bytes, MSH-18 decoding, accessors) and building (ACK/ERR,
escaping, ORU, DFT), on canned messages."""
from __future__ import annotations

from datetime import datetime

import pytest

from risnode.errors import Hl7Error
from risnode.hl7 import build, charsets
from risnode.hl7.datatypes import parse_dtm, pn_to_xpn, xcn_to_pn, xpn_to_pn
from risnode.hl7.message import parse, read_ack, read_header
from risnode.records import Order, Patient

ADT = (b"MSH|^~\\&|HIS|HOSP|RIS|RAD|20240501120000||ADT^A04^ADT_A01|CTRL1|P|2.5.1||||||8859/1\r"
       b"PID|1||123^^^HOSP^MR~456^^^OTHER^PI||M\xfcller\\S\\X^Hans&Peter^^Jr^Dr||19700101|M\r")


def test_header_and_accessors():
    msg = parse(ADT)
    h = msg.header
    assert (h.sending_app, h.message_type, h.event, h.control_id, h.version, h.charset) == ("HIS", "ADT", "A04", "CTRL1", "2.5.1", "8859/1")
    assert h.control_key == "HIS|HOSP|CTRL1"
    pid = msg.first("PID")
    assert pid.get(3) == "123" and pid.get(3, 4) == "HOSP" and pid.get(3, 1, 2) == "456" and pid.repetitions(3) == 2
    assert pid.get(5) == "Müller^X"  # decoded as Latin-1, \S\ unescaped
    assert pid.get(5, 2) == "Hans" and pid.get(5, 2, 1, 2) == "Peter"
    assert pid.get(99) == "" and pid.get(3, 9) == "" and pid.get(3, 1, 5) == ""
    assert msg.first("OBR") is None


def test_line_feeds_are_segment_ends():
    msg = parse(ADT.replace(b"\r", b"\r\n"))
    assert [s.name for s in msg.segments] == ["MSH", "PID"]


@pytest.mark.parametrize("raw, location, ack_code", [
    (b"PID|1", "MSH-1", "AR"),
    (b"MSH|^~\\&|HIS|HOSP|||2024||ADT^A04|1|P|2.5||||||KOI8-R\r", "MSH-18", "AR"),
    (b"MSH|^~\\&|HIS|HOSP|||2024||ADT^A04|1|P|2.5||||||UNICODE UTF-8\rPID|1||\xff\r", "MSH-18", "AR"),
    (b"MSH|^~\\&|HIS|HOSP|||2024||ADT|1|P|2.5\r", "MSH-9.2", "AR"),
    (b"MSH|^~\\&|HIS|HOSP|||2024||ADT^A04||P|2.5\r", "MSH-10", "AR"),
    (b"MSH|^~\\&|HIS|HOSP|||2024||ADT^A04|1|P|3.0\r", "MSH-12", "AR"),
    (b"MSH|^~\\&|HIS|HOSP|||2024||ADT^A04|1|X|2.5\r", "MSH-11", "AR"),
])
def test_broken_headers_are_rejected(raw, location, ack_code):
    with pytest.raises(Hl7Error) as info:
        parse(raw)
    assert (info.value.location, info.value.ack_code) == (location, ack_code)


def test_read_header_never_raises():
    assert read_header(b"garbage").control_id == ""
    assert read_header(b"MSH|^~\\&|A|B|C|D|E||ORM^O01|X9|P").control_id == "X9"


def test_charset_guess_and_mapping():
    assert charsets.guess(b"abc") == "ASCII"
    assert charsets.guess("é".encode()) == "UNICODE UTF-8"
    assert charsets.guess("é".encode("latin-1")) == "8859/1"
    assert charsets.dicom_term("8859/1") == "ISO_IR 100" and charsets.dicom_term("UNICODE UTF-8") == "ISO_IR 192"
    assert charsets.dicom_term_for(["DOE"], "ISO_IR 100") is None
    assert charsets.dicom_term_for(["Müller"], "ISO_IR 100") == "ISO_IR 100"
    assert charsets.dicom_term_for(["Łukasz"], "ISO_IR 100") == "ISO_IR 192"  # not Latin-1


def test_ack_with_err():
    header = parse(ADT).header
    error = Hl7Error.missing("PID-3", "patient identifier")
    text = build.ack(header, "RIS", "RAD", "A1", datetime(2024, 5, 1, 12), "AE", error)
    msh, msa, err = text.rstrip("\r").split("\r")
    assert msh.split("|")[8:12] == ["ACK^A04^ACK", "A1", "P", "2.5.1"] and msh.endswith("|8859/1")
    assert msa.split("|")[:3] == ["MSA", "AE", "CTRL1"]
    fields = err.split("|")
    assert fields[1] == "PID^1^3^101&Required field missing&HL70357"
    assert fields[2] == "PID^1^3^1" and fields[3] == "101^Required field missing^HL70357" and fields[4] == "E"
    assert read_ack(text.encode()) == ("AE", "CTRL1", error.text)


def test_escape_round_trip():
    value = "a|b^c&d~e\\f"
    escaped = build.escape(value)
    assert escaped == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
    msg = parse(f"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5\rNTE|1||{escaped}\r".encode())
    assert msg.first("NTE").get(3) == value


def test_names_and_times():
    assert xpn_to_pn(["DOE", "JOHN", "Q", "JR", "DR"]) == "DOE^JOHN^Q^DR^JR"
    assert pn_to_xpn("DOE^JOHN^Q^DR^JR") == ["DOE", "JOHN", "Q", "JR", "DR"]
    assert xcn_to_pn(["123", "WELBY", "MARCUS"]) == "WELBY^MARCUS"
    assert parse_dtm("202405011230") == datetime(2024, 5, 1, 12, 30)
    assert parse_dtm("20240501123045.123+0100") == datetime(2024, 5, 1, 12, 30, 45)
    assert parse_dtm("2024-05-01") is None and parse_dtm("20241301") is None


def _order() -> tuple[Patient, Order]:
    patient = Patient(id="P1", issuer="HOSP", name="DOE^JOHN", birth_date="19700101", sex="M",
                      insurance=[{"company": "Acme", "policy_number": "POL1", "plan_id": "G"}])
    order = Order(accession="A1", patient_id="P1", placer_order="PO1", modality="CT", study_uid="1.2.3",
                  procedure={"code": "74177", "meaning": "CT ABD", "scheme": "C4"}, cpt={"code": "74177", "meaning": "CT ABD"},
                  diagnoses=[{"code": "K35.80", "meaning": "Appendicitis", "scheme": "I10"}], scheduled="2024-05-01T09:00:00",
                  referring_physician="WELBY^MARCUS", ordering_provider="HOUSE^GREGORY")
    return patient, order


def test_oru_carries_the_report():
    patient, order = _order()
    report = {"status": "F", "text": "Line one\nLine | two", "radiologist": "CURIE^MARIE", "at": "2024-05-01T11:00:00"}
    msg = parse(build.oru(patient, order, report, "RIS", "RAD", "C9", datetime(2024, 5, 1, 11)).encode())
    assert msg.kind == "ORU^R01" and msg.header.charset == "UNICODE UTF-8"
    obr = msg.first("OBR")
    assert (obr.get(3), obr.get(25), obr.get(4), obr.get(32, 1, 1, 2)) == ("A1", "F", "74177", "CURIE")
    assert [o.get(5) for o in msg.all("OBX")] == ["Line one", "Line | two"]
    assert all(o.get(11) == "F" for o in msg.all("OBX"))
    assert msg.first("PID").get(5) == "DOE" and msg.first("PV1").get(8, 2) == "WELBY"


def test_dft_carries_codes_and_insurance():
    patient, order = _order()
    msg = parse(build.dft(patient, order, "RIS", "RAD", "C10", datetime(2024, 5, 1, 12)).encode())
    ft1 = msg.first("FT1")
    assert (ft1.get(25), ft1.get(25, 3), ft1.get(19), ft1.get(23), ft1.get(6)) == ("74177", "C4", "K35.80", "A1", "CG")
    assert msg.first("DG1").get(3) == "K35.80" and msg.first("IN1").get(36) == "POL1"
