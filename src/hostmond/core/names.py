"""Key algorithm and file names, importable without loading ``cryptography``.

``hostmon keys`` builds its argument parser from these on every start of the
agent; keeping them apart from :mod:`hostmond.core.keys` spares an agent that
does not ship the cryptography library's memory (about 6 MB).
"""

from __future__ import annotations

ED25519 = "ed25519"
X25519 = "x25519"
MLKEM768_X25519 = "mlkem768-x25519"
ALGORITHMS = (ED25519, X25519, MLKEM768_X25519)
INGEST_ALGORITHMS = (X25519, MLKEM768_X25519)

AGENT_KEY_NAME = "agent"
INGEST_KEY_NAME = "ingest"
