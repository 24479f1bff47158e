"""Archive logic (store, query, retrieve) over the index and the blob store only."""
