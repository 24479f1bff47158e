"""A lean DICOM upper layer on asyncio for associations that only store and verify.

pynetdicom negotiates and serves everything else (query/retrieve, mixed associations);
its PDU classes and presentation-context negotiation are reused here, so both paths
accept and reject exactly the same proposals.
"""
