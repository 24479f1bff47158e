"""RIS logic over the store: ADT, orders, scheduling, worklist, MPPS, statuses, results."""
