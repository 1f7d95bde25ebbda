"""Every scenario of scenarios.txt with paho-mqtt and mosquitto_pub/sub, 3.1.1 and 5.0."""

import pytest

from libraries import LIBRARIES, MOSQUITTO_PUB, MOSQUITTO_SUB
from scenarios import BROKER_FLAGS, SCENARIOS, scenario_names


def test_every_listed_scenario_is_implemented():
    assert list(SCENARIOS) == scenario_names()


@pytest.mark.parametrize("scenario", scenario_names())
@pytest.mark.parametrize("lib", LIBRARIES, ids=[lib.name for lib in LIBRARIES])
def test_scenario(start_broker, lib, scenario):
    if lib.name.startswith("mosquitto") and not (MOSQUITTO_PUB and MOSQUITTO_SUB):
        pytest.fail("mosquitto_pub/mosquitto_sub missing; tests/run-all.sh installs mosquitto-clients")
    b = start_broker(*BROKER_FLAGS.get(scenario, []))
    SCENARIOS[scenario](lib, b.addr, f"{lib.name}-{scenario}")
