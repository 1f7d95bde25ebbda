"""The slot map in NATS (README "Cluster (preview)"): with `--nats`, the KV bucket `berth_slots` is
the authority, seeded from a node's slot map file only while it is empty. `berth cluster assign`
changes it by compare-and-swap on the revision it read, and every node applies the change: a
client id whose slot moved is refused by its old node (CONNACK 0x9C, Server Reference naming the
new owner) and accepted by the new one. A swap on a revision that is no longer the entry's is
refused and changes nothing; a node started later, or sent SIGHUP, keeps the bucket's map over
its file's; two nodes starting together on an empty bucket with files that disagree both serve
the one map that seeded it. Given HAProxy's runtime socket, `assign` also sets HAProxy's map, so a client
connecting through HAProxy lands on the new owner.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time

from berthproc import Broker, berth_bin, stop_cleanly
from conftest import NATS_SLOT_MAP, SlotMap, free_port, nats_home, slot_of
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


def test_assign_tells_haproxy_and_clients_through_it_land_on_the_new_owner(tmp_path, start_nats, start_node,
                                                                          start_haproxy):
    nats = start_nats()
    slot_map = SlotMap(str(tmp_path / "slots.txt"),
                       {"n1": f"127.0.0.2:{free_port('127.0.0.2')}", "n2": f"127.0.0.3:{free_port('127.0.0.3')}"})
    nodes = {name: start_node(name, host, slot_map, "--nats", nats.url)
             for name, host in (("n1", "127.0.0.2"), ("n2", "127.0.0.3"))}
    proxy = start_haproxy(slot_map)
    movers = [cid for cid in (f"through-{i}" for i in range(10_000)) if slot_map.home(cid) == "n1"][:2]
    slots = sorted({slot_of(cid) for cid in movers})
    first, last = slots[0], slots[-1]
    # Every slot from the first to the last moves (all n1's: the even split gives it 0-2047).
    via = connect(proxy.addr, movers[0])
    assert code(via) == 0 and via.user_properties()["berth-node"] == "n1"
    via.disconnect()

    moved = cluster_command("assign", "--nats", nats.url, "--slots", f"{first}-{last}", "--node", "n2",
                            "--haproxy-socket", proxy.socket_path, "--haproxy-map", proxy.map_path)
    assert moved.returncode == 0, moved.stderr
    shown = proxy.runtime(f"show map {proxy.map_path}")
    for slot in (first, last, (first + last) // 2):
        assert re.search(rf"^\S+ {slot} n2$", shown, re.M), f"HAProxy's map does not give {slot} to n2"
    for cid in movers:
        deadline = time.monotonic() + WAIT
        while True:
            p = connect(proxy.addr, cid)
            if code(p) == 0:
                break
            # HAProxy routes it to n2 already; n2's watch may not have applied the swap yet.
            assert time.monotonic() < deadline, f"{cid} still refused through HAProxy: {p.connack}"
            time.sleep(0.1)
        assert p.user_properties()["berth-node"] == "n2"
        p.disconnect()
    until_answer(nodes["n1"], movers[0], (USE_ANOTHER_SERVER, slot_map.nodes["n2"]))
    # The map file for HAProxy's next start, written from the bucket, says the same.
    written = cluster_command("haproxy-map", "--nats", nats.url)
    assert written.returncode == 0, written.stderr
    lines = written.stdout.splitlines()
    assert len(lines) == 4096 and lines[first] == f"{first} n2" and lines[last] == f"{last} n2"
    assert lines[4095] == "4095 n2"
    if first > 0:
        assert lines[0] == "0 n1"

    # A socket that is not there: the swap is in, and the error says so and what to do.
    again = cluster_command("assign", "--nats", nats.url, "--slots", str(first), "--node", "n1",
                            "--haproxy-socket", str(tmp_path / "nowhere.sock"), "--haproxy-map", proxy.map_path)
    assert again.returncode != 0
    assert "the slot map is at revision" in again.stderr and "was not told" in again.stderr, again.stderr


def test_two_nodes_seeding_an_empty_bucket_together_agree_on_one_map(tmp_path, start_nats):
    nats = start_nats()
    cid = next(c for c in (f"seeded-{i}" for i in range(10_000)) if 0 < slot_of(c) < 2047)
    slot = slot_of(cid)
    # The two files disagree on one slot: na's gives it to na, nb's to nb.
    files = {"na": tmp_path / "na.map", "nb": tmp_path / "nb.map"}
    files["na"].write_text(NATS_SLOT_MAP)
    files["nb"].write_text("node na 127.0.0.1:1\nnode nb 127.0.0.1:2\n"
                           f"0-{slot - 1} na 1\n{slot} nb 1\n{slot + 1}-2047 na 1\n2048-4095 nb 1\n")
    started: dict[str, Broker] = {}
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            workdir = tmp_path / f"together-{name}"
            workdir.mkdir()
            started[name] = Broker.start("--node", name, "--slot-map", str(files[name]), "--nats", nats.url,
                                         cores=1, workdir=str(workdir))
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=start, args=(name,)) for name in ("na", "nb")]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        listing = cluster_command("slots", "--nats", nats.url)
        assert listing.returncode == 0, listing.stderr
        nb_won, na_won = f"\n{slot} nb 1\n" in listing.stdout, "\n0-2047 na 1\n" in listing.stdout
        assert nb_won != na_won, listing.stdout
        owner, other = ("nb", "na") if nb_won else ("na", "nb")
        # Both nodes serve the winner's map, whichever file each read.
        until_answer(started[owner], cid, (0, None))
        until_answer(started[other], cid, (USE_ANOTHER_SERVER, ADDRESS[owner]))
    finally:
        stop_cleanly(list(started.values()))
