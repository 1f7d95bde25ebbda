"""The slot map in NATS (README "Cluster (preview)"): with `--nats`, the KV bucket `berth_slots` is
the authority, seeded from a node's slot map file only while it is empty. `berth cluster assign`
changes it by compare-and-swap on the revision it read, and every node applies the change: a
client id whose slot moved is refused by its old node (CONNACK 0x9C, Server Reference naming the
new owner) and accepted by the new one. A swap on a revision that is no longer the entry's is
refused and changes nothing; a node started later, or sent SIGHUP, keeps the bucket's map over
its file's.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

from berthproc import berth_bin
from conftest import NATS_SLOT_MAP, nats_home, slot_of
from test_cluster import USE_ANOTHER_SERVER, code, connect

ADDRESS = {"na": "127.0.0.1:1", "nb": "127.0.0.1:2"}
WAIT = 20.0


def cluster_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([berth_bin(), "cluster", *args], capture_output=True, text=True, timeout=60)


def revision_of(listing: str) -> int:
    found = re.match(r"# revision (\d+)\n", listing)
    assert found, listing
    return int(found[1])


def id_homed_on(node: str, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(10_000) if nats_home(f"{prefix}-{i}") == node)


def answer(node, client_id: str) -> tuple[int, str | None]:
    """The CONNACK's reason code and Server Reference from `node` for `client_id`."""
    p = connect(node.addr, client_id)
    props = p.connack[2]
    reference = getattr(props, "ServerReference", None) if props is not None else None
    result = (code(p), reference)
    if result[0] == 0:
        p.disconnect()
    return result


def until_answer(node, client_id: str, expected: tuple[int, str | None]) -> None:
    deadline = time.monotonic() + WAIT
    while (got := answer(node, client_id)) != expected:
        assert time.monotonic() < deadline, f"{node.describe()} still answers {got}, not {expected}"
        time.sleep(0.1)


def test_a_swap_in_the_bucket_moves_where_a_client_id_is_accepted(start_nats, start_nats_node):
    nats = start_nats()
    na, nb = start_nats_node("na", nats), start_nats_node("nb", nats)
    listing = cluster_command("slots", "--nats", nats.url)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split("\n", 1)[1] == NATS_SLOT_MAP
    seeded = revision_of(listing.stdout)

    cid = id_homed_on("na", "mover")
    slot = slot_of(cid)
    assert answer(na, cid) == (0, None)
    assert answer(nb, cid) == (USE_ANOTHER_SERVER, ADDRESS["na"])

    moved = cluster_command("assign", "--nats", nats.url, "--slots", str(slot), "--node", "nb")
    assert moved.returncode == 0, moved.stderr
    assert revision_of(moved.stdout) > seeded
    assert f"\n{slot} nb 2\n" in moved.stdout, moved.stdout
    until_answer(na, cid, (USE_ANOTHER_SERVER, ADDRESS["nb"]))
    until_answer(nb, cid, (0, None))
    # Only that slot moved: a neighbour homed on na stays there.
    other = next(f"stay-{i}" for i in range(10_000)
                 if nats_home(f"stay-{i}") == "na" and slot_of(f"stay-{i}") != slot)
    assert answer(na, other) == (0, None)

    # A swap based on the seeded revision is stale now: refused, and nothing changes.
    stale = cluster_command("assign", "--nats", nats.url, "--slots", str(slot), "--node", "na",
                            "--revision", str(seeded))
    assert stale.returncode != 0
    assert f"changed since revision {seeded}" in stale.stderr, stale.stderr
    after = cluster_command("slots", "--nats", nats.url)
    assert after.stdout == moved.stdout
    assert answer(nb, cid) == (0, None)

    # SIGHUP re-reads no slot map file while the bucket rules; a node started later takes the
    # bucket's map, not its file's (the file still gives the slot to na).
    mark = len(na.stderr_text())
    na.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while "configuration reloaded" not in na.stderr_text()[mark:]:
        assert time.monotonic() < deadline, na.describe()
        time.sleep(0.05)
    assert answer(na, cid) == (USE_ANOTHER_SERVER, ADDRESS["nb"])
    na.stop()
    again = start_nats_node("na", nats)
    assert answer(again, cid) == (USE_ANOTHER_SERVER, ADDRESS["nb"])


def test_assign_refuses_what_it_cannot_do_and_names_why(start_nats, start_nats_node):
    nats = start_nats()
    start_nats_node("na", nats)
    before = cluster_command("slots", "--nats", nats.url).stdout
    unknown = cluster_command("assign", "--nats", nats.url, "--slots", "0-9", "--node", "nc")
    assert unknown.returncode != 0 and "node nc is not in the map" in unknown.stderr, unknown.stderr
    bad = cluster_command("assign", "--nats", nats.url, "--slots", "9-3", "--node", "nb")
    assert bad.returncode != 0 and "--slots" in bad.stderr and "backwards" in bad.stderr, bad.stderr
    assert cluster_command("slots", "--nats", nats.url).stdout == before
    # A node that joins: declared with its address, it gets the range at the next epoch.
    joined = cluster_command("assign", "--nats", nats.url, "--slots", "0-9", "--node", "nc",
                             "--address", "127.0.0.1:3")
    assert joined.returncode == 0, joined.stderr
    assert "node nc 127.0.0.1:3\n" in joined.stdout and "\n0-9 nc 2\n" in joined.stdout, joined.stdout
