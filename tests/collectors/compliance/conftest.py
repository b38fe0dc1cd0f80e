from __future__ import annotations

import sys
from pathlib import Path

# lets the compliance tests import their helper module (compliance_trees)
sys.path.insert(0, str(Path(__file__).resolve().parent))

