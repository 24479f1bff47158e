"""risnode: the radiology front office (orders, worklist, MPPS, results) beside pacsnode."""

__version__ = "0.1.0"
