"""pynetdicom glue: the AE (Modality Worklist FIND, MPPS, Verification) and thin handlers."""
