"""Endpoint security for hostmon's HTTP servers: TLS, client certificates, basic/bearer auth, rate limits."""
