"""Batch shipping: seal (msgpack + zstd + HPKE + Ed25519), spool, send."""
