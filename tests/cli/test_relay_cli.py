"""`p2pvoix relay` as a real process: it joins a room as a relay and listeners hang from it."""

from __future__ import annotations

import signal

from tests.cli.test_live import LOOPBACK, Proc, host, join


def test_a_relay_process_feeds_listeners_the_host_cannot_take(procs, tmp_path):
    host_proc, key = host(procs, tmp_path, "--relay-slots", "1")
    relay = Proc(["relay", "--room", key, "--relay-slots", "4", "--json", *LOOPBACK],
                 tmp_path / "relay")
    procs.append(relay)
    relay.wait_for("relaying", timeout=30)
    listeners = [join(procs, tmp_path, key, f"l{i}", "--relay-slots", "0") for i in range(3)]
    for listener in listeners:
        listener.wait_for("first_audio", timeout=30)
    # The host feeds one child (its cap): the others hear it through the relay.
    host_links = [e for _, e in host_proc.lines if e.get("type") == "link_up"]
    assert len(host_links) <= 2  # the relay, and at most one listener before the plan settled
    relay.popen.send_signal(signal.SIGINT)
    assert relay.finish()[0] == 0
