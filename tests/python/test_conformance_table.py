"""CONFORMANCE.md stays honest: every rule of both specifications has a test or a reason, every
test it names exists, and the file is what tests/conformance/conformance.py renders."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "conformance"))

import conformance  # noqa: E402


def test_every_rule_has_an_existing_test_or_a_reason():
    rules = conformance.load()
    assert conformance.problems(rules) == []


def test_both_specifications_are_complete():
    rules = conformance.load()
    ids = {v: {r.id for r in rules if r.version == v} for v, _ in conformance.SPECS}
    # Spot checks that the lists are the whole appendices, not a selection.
    assert {"MQTT-1.5.3-1", "MQTT-3.1.2-24", "MQTT-3.10.4-6", "MQTT-4.8.0-2", "MQTT-7.1.2-1"} <= ids["3.1.1"]
    assert {"MQTT-1.5.7-1", "MQTT-3.1.2-30", "MQTT-3.15.2-3", "MQTT-4.2.0-1", "MQTT-4.13.2-1", "MQTT-6.0.0-4"} <= ids["5.0"]
    assert (len(ids["3.1.1"]), len(ids["5.0"])) == (143, 251)


def test_conformance_md_is_current():
    with open(conformance.OUTPUT, encoding="utf-8") as f:
        assert f.read() == conformance.render(conformance.load()), \
            "CONFORMANCE.md is stale: run python3 tests/conformance/conformance.py"
