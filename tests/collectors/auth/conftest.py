import sys
from pathlib import Path

# lets the auth tests import their helper module (auth_fail2ban_eval)
sys.path.insert(0, str(Path(__file__).resolve().parent))
