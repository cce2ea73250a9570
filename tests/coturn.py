"""coturn (``turnserver``) for tests: a STUN and TURN server started by the test itself.

Debian's ``coturn`` package; ``.ci/run`` installs it on CI. Elsewhere the tests that need it skip
with the reason. Started with a throwaway user, no TLS, no CLI, logging to a temporary file, and
only on the addresses given (loopback, or a lab namespace's address).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest

from p2pvoix.reach.service import stun_mappings

USER, PASSWORD = "p2pvoix", "lab-secret"
READY = "Total General servers"
PRIVATE_RANGES = ("10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255",
                  "192.168.0.0-192.168.255.255")  # coturn's log line once its listeners are open


def skip_unless_coturn() -> None:
    if shutil.which("turnserver") is None:
        pytest.skip("this test needs coturn's turnserver (Debian: apt install coturn)")


def turnserver_argv(ips: Sequence[str], port: int, log: str) -> list[str]:
    argv = ["turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "-p", str(port),
            "--realm", "p2pvoix.lab", "--lt-cred-mech", "--user", f"{USER}:{PASSWORD}",
            "--fingerprint", "--log-file", log, "--simple-log", "--no-stdout-log",
            "--pidfile", log + ".pid", "--userdb", log + ".db",
            "--min-port", "49152", "--max-port", "49352"]
    # As docs/nat.md tells users: no relaying into private networks. It is also what keeps ICE
    # working: a peer's private host candidate is unroutable from the server, and coturn 4.6.1
    # ends the whole allocation when a send to a bound peer fails ("wrote to peer -1 bytes"),
    # after which every ChannelBind fails (438 Wrong nonce, then 400).
    for private in PRIVATE_RANGES:
        argv += ["--denied-peer-ip", private]
    for ip in ips:
        argv += ["-L", ip]
    if any(ip.startswith("127.") for ip in ips):
        argv.append("--allow-loopback-peers")
    return argv


@contextlib.contextmanager
def coturn(ips: Sequence[str], port: int = 3478, prefix: Sequence[str] = ()) -> Iterator[str]:
    """Run turnserver on ``ips`` (``prefix``: e.g. ``ip netns exec NS``) until the block ends;
    yields its log file's path. Waits until every address answers STUN."""
    skip_unless_coturn()
    with tempfile.TemporaryDirectory(prefix="coturn-") as tmp:
        log = f"{tmp}/turn.log"
        proc = subprocess.Popen([*prefix, *turnserver_argv(ips, port, log)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_stun(ips, port, prefix, proc, log)
            yield log
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_stun(ips: Sequence[str], port: int, prefix: Sequence[str],
                   proc: subprocess.Popen[bytes], log: str) -> None:
    """Until its listeners are up (its log says so); from here (not in a namespace) until each
    address also answers a STUN request."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"turnserver exited with {proc.returncode}: {_tail(log)}")
        if READY in _tail(log) and (prefix or asyncio.run(_answers(ips, port))):
            return
        time.sleep(0.1)
    raise AssertionError(f"turnserver was not ready within 10 s: {_tail(log)}")


def _tail(log: str) -> str:
    with contextlib.suppress(OSError), open(log, errors="replace") as file:
        return file.read()[-3000:]
    return ""


async def _answers(ips: Sequence[str], port: int) -> bool:
    return len(await stun_mappings(tuple((ip, port) for ip in ips))) == len(ips)
