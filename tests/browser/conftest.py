import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # the shared test helpers in tests/

CHROMIUM = Path("/usr/bin/chromium")

# The browser tests drive Debian's chromium (make test-dashboard installs it); without it there is nothing to run.
if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
    collect_ignore_glob = ["test_*.py"]
