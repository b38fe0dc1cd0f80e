"""Make tests/ingest/ingest_helpers.py importable from the ingest tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
