"""`berth cluster forget-node` (README "Cluster (preview)"): a node that never comes back
leaves its interest entries, heartbeat and stream in NATS; the command removes them, and
refuses while the slot map (the cluster's bucket, and the file given) still gives the node
slots or while it is live."""

from __future__ import annotations

import subprocess
import time

from berthproc import berth_bin
from test_nats_bridge import Client, WAIT, name, until_routed

NO_SLOTS_FOR_NB = "node na 127.0.0.1:1\nnode nb 127.0.0.1:2\n0-4095 na 1\n"
QUOTA = 0x97


def forget(node: str, slot_map, nats) -> subprocess.CompletedProcess:
    return subprocess.run([berth_bin(), "cluster", "forget-node", "--node", node, "--slot-map",
                           str(slot_map), "--nats", nats.url], capture_output=True, text=True, timeout=60)


def test_forget_a_dead_node(start_nats, start_nats_node, tmp_path):
    nats = start_nats()
    a = start_nats_node("na", nats)
    b = start_nats_node("nb", nats)
    sub = Client(name("nb"), b.addr)
    sub.subscribe("gone/#", qos=1)
    pub = Client(name("na"), a.addr)
    until_routed(pub, sub, "gone/probe")

    done = forget("nb", tmp_path / "nats-slots.map", nats)
    assert done.returncode != 0 and "owns 2048 slots" in done.stderr, done
    moved = tmp_path / "moved.map"
    moved.write_text(NO_SLOTS_FOR_NB)
    # The map in force is the bucket's (seeded from the nodes' file): a file without nb's
    # slots is not enough while the bucket still gives them to it.
    done = forget("nb", moved, nats)
    assert done.returncode != 0 and "owns 2048 slots in the cluster's slot map" in done.stderr, done
    assigned = subprocess.run([berth_bin(), "cluster", "assign", "--nats", nats.url, "--slots", "0-4095",
                               "--node", "na"], capture_output=True, text=True, timeout=60)
    assert assigned.returncode == 0, assigned
    done = forget("nb", moved, nats)
    assert done.returncode != 0 and "is live" in done.stderr, done
    assert nats.stream("BERTH_IN_nb") is not None

    b.proc.kill()
    b.proc.wait()
    b.stop(sig=None)
    # Its interest stays: na's QoS 1 messages for it wait in its stream.
    assert pub.publish("gone/x", b"waits", 1) == 0
    deadline = time.monotonic() + WAIT + 10  # a heartbeat is live for 6 s
    while (done := forget("nb", moved, nats)).returncode != 0:
        assert "is live" in done.stderr, done
        assert time.monotonic() < deadline, done
        time.sleep(0.5)
    assert "1 interest entries" in done.stdout and "1 messages waiting" in done.stdout, done.stdout
    assert nats.stream("BERTH_IN_nb") is None
    # na no longer forwards to nb: its PUBACKs are not refusals for want of nb's stream.
    deadline = time.monotonic() + WAIT
    while (rc := pub.publish("gone/y", b"nobody", 1)) == QUOTA:
        assert time.monotonic() < deadline, "na still forwards to the forgotten node"
        time.sleep(0.1)
    assert rc in (0x00, 0x10), rc
    # Nothing left to forget: a second run succeeds and removes nothing.
    again = forget("nb", moved, nats)
    assert again.returncode == 0 and "0 interest entries" in again.stdout and "no stream" in again.stdout, again
    pub.close()
