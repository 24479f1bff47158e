"""pynetdicom glue: the AE and its contexts, thin handlers, the retrieve service class, serving."""
