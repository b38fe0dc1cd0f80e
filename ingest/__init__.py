"""hostmon's reference ingest: verifies, decrypts and stores sealed batches."""
