from __future__ import annotations

import sys
from pathlib import Path

# lets the compliance tests import their helper module (compliance_trees)
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Before the hostmond merge: the pytest plugin installed on this machine may come from another
# checkout (hostmond.testing); use this tree's harness so its Sample/Event classes match.
from agent.testing import hostmon_collector  # noqa: E402,F401
