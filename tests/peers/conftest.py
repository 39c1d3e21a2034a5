import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # the shared test helpers in tests/

# The peer instrumentations are installed only in the peers venv (make test-peers).
if importlib.util.find_spec("opentelemetry.instrumentation.openai_v2") is None:
    collect_ignore_glob = ["test_*.py"]
