"""HL7 v2 without I/O: MLLP framing, parsing (python-hl7 underneath), charsets, building messages."""
