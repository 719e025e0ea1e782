"""System tests: the worker image built and run as users do, on a dockerd of the test run's own. They reuse the
integration tests' helpers for real services on 127.0.0.1 (tests/integration/stack.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
