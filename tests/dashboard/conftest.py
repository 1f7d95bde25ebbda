"""The dashboard test reuses the black-box harness of tests/python: its fixtures
(`start_broker`) and helpers (berthproc, clients), as tests/interop does."""

import importlib.util
import os
import sys

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python")
sys.path.insert(0, HARNESS)

_spec = importlib.util.spec_from_file_location("berth_harness_conftest", os.path.join(HARNESS, "conftest.py"))
_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_harness)

pytest_sessionstart = _harness.pytest_sessionstart
start_broker = _harness.start_broker
