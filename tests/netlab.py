"""Network namespaces for tests: hosts on switches, routers, NAT, packet loss and bandwidth limits.

A ``Lab`` builds small networks out of Linux network namespaces and tears all of it down on exit,
even when the test fails. Nothing touches the root namespace: every namespace the lab makes is
named ``<tag>-<name>`` (the tag holds our pid and a random part, so parallel runs never collide),
each switch is a bridge inside a namespace of its own, and every veth pair is created directly
between two lab namespaces. No lab network is linked to a real interface, so no lab packet can
leave the machine.

    with Lab() as lab:
        lan = lab.switch("lan")
        a = lab.namespace("a")
        a.connect(lan, "10.7.0.2/24")
        child = a.python("-m", "tests.node.lan_helpers.lan_node", "--seed", "1")
        child.expect(lambda m: m["event"] == "ready")

Needs root, ``ip`` (iproute2) and, for the NAT and loss helpers, ``nft`` and ``tc``. Tests call
``skip_unless_netns()`` (or take the ``lab`` fixture), which skips with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BRIDGE = "br0"
COMMAND_TIMEOUT = 20.0  # seconds for one ip/nft/tc command; they take milliseconds
MAX_IFNAME = 15  # IFNAMSIZ - 1


class LabError(RuntimeError):
    """A lab command failed; the message holds the command and its stderr."""


# ---- availability ----


@functools.cache
def netns_unavailable_reason() -> str | None:
    """Why this machine cannot run namespace tests, or None if it can (checked once)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespace tests need root (they run as root in CI; try `sudo make test`)"
    if shutil.which("ip") is None:
        return "network namespace tests need `ip` from iproute2"
    probe = f"nlprobe-{os.getpid()}-{secrets.token_hex(3)}"
    added = _quiet(["ip", "netns", "add", probe])
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip() or added.returncode}"
    _quiet(["ip", "netns", "del", probe])
    return None


def skip_unless_netns(*tools: str) -> None:
    """Skip the calling test, with the reason, unless namespaces (and ``tools``) are usable."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"this test needs {', '.join(missing)}")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh ``Lab``, torn down after the test; skips when namespaces are unavailable.

    Use it from a test module with ``lab = netlab.lab`` (pytest finds fixtures by module name).
    """
    skip_unless_netns()
    with Lab() as new_lab:
        yield new_lab


# ---- the lab ----


class Lab:
    """Namespaces, switches and processes that all go away together on ``close()``."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or f"nl{os.getpid()}{secrets.token_hex(2)}"
        self._namespaces: list[Namespace] = []
        self._children: list[Child] = []
        self._closed = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        try:
            self.close()
        except LabError as exc:
            if exc_type is None:
                raise
            # The test's own failure matters more; still say what was left behind.
            print(f"netlab: {exc}", file=sys.stderr)

    def namespace(self, name: str, *, ipv6: bool = False) -> Namespace:
        """A new namespace with ``lo`` up; IPv6 is off unless asked for (less noise on the wire)."""
        if self._closed:
            raise LabError("the lab is closed")
        full = f"{self.tag}-{name}"
        if any(ns.name == full for ns in self._namespaces):
            raise LabError(f"namespace {name!r} exists already")
        _run(["ip", "netns", "add", full])
        namespace = Namespace(self, name, full)
        self._namespaces.append(namespace)  # from here on, close() removes it
        namespace.ip("link", "set", "lo", "up")
        if not ipv6:
            namespace.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
            namespace.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        return namespace

    def switch(self, name: str) -> Switch:
        """An Ethernet switch: a bridge alone in a namespace of its own."""
        namespace = self.namespace(f"sw-{name}")
        namespace.ip("link", "add", BRIDGE, "type", "bridge")
        namespace.ip("link", "set", BRIDGE, "up")
        switch = Switch(name, namespace)
        return switch

    def router(self, name: str, *links: tuple[Switch, str]) -> Namespace:
        """A namespace joined to each ``(switch, "address/prefix")`` that forwards IPv4 between
        them; its interfaces are named ``eth0``, ``eth1``… in the order given."""
        router = self.namespace(name)
        for index, (switch, address) in enumerate(links):
            router.connect(switch, address, ifname=f"eth{index}")
        router.sysctl("net.ipv4.ip_forward", "1")
        return router

    def close(self) -> None:
        """End every process the lab started, then delete its namespaces (and so every veth)."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for child in reversed(self._children):
            child.close()
        # Deleting a namespace destroys the veths in it, and with them their peers.
        for namespace in reversed(self._namespaces):
            result = _quiet(["ip", "netns", "del", namespace.name])
            if result.returncode != 0 and namespace.name in list_namespaces():
                errors.append(f"{namespace.name}: {result.stderr.strip()}")
        if errors:
            raise LabError("could not delete namespaces: " + "; ".join(errors))

    def namespaces(self) -> list[str]:
        """Full names of the namespaces this lab made (deleted or not)."""
        return [ns.name for ns in self._namespaces]

    def _adopt(self, child: Child) -> None:
        self._children.append(child)


@dataclass(frozen=True)
class Interface:
    """One end of a veth pair, inside ``namespace``, with an IPv4 address."""

    namespace: Namespace
    name: str
    address: str  # "10.7.0.2/24"

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


class Switch:
    """A bridge named ``br0`` in its own namespace; ``Namespace.connect`` plugs hosts into it."""

    def __init__(self, name: str, namespace: Namespace) -> None:
        self.name = name
        self.namespace = namespace
        self._ports = 0

    def _next_port(self) -> str:
        self._ports += 1
        return f"p{self._ports}"


class Namespace:
    """A network namespace of a ``Lab``: commands, processes, addresses, routes, firewall."""

    def __init__(self, lab: Lab, short: str, name: str) -> None:
        self.lab = lab
        self.short = short
        self.name = name
        self.interfaces: list[Interface] = []

    def __repr__(self) -> str:
        return f"Namespace({self.name})"

    # -- commands and processes --

    def run(
        self, *argv: str, check: bool = True, input: str | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside this namespace and wait for it."""
        return _run(
            ["ip", "netns", "exec", self.name, *argv], check=check, input=input, timeout=timeout
        )

    def ip(self, *args: str) -> str:
        """``ip -n <this namespace> …``; returns its output."""
        return _run(["ip", "-n", self.name, *args]).stdout

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def python(self, *args: str, env: dict[str, str] | None = None) -> Child:
        """This interpreter, run inside the namespace from the repository root, speaking JSON lines
        on stdin/stdout (``Child``). The lab ends it on close if the test has not."""
        argv = ["ip", "netns", "exec", self.name, sys.executable, *args]
        child = Child(argv, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.lab._adopt(child)
        return child

    # -- links and addresses --

    def connect(self, switch: Switch, address: str, *, ifname: str | None = None) -> Interface:
        """Plug a new veth into ``switch`` with IPv4 ``address`` ("10.7.0.2/24"), and bring it up."""
        ifname = ifname or f"eth{len(self.interfaces)}"
        if len(ifname) > MAX_IFNAME:
            raise LabError(f"interface name {ifname!r} is longer than {MAX_IFNAME} characters")
        port = switch._next_port()
        # Created inside the switch's namespace with its peer sent straight here: neither end
        # ever exists in the root namespace.
        switch.namespace.ip(
            "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", self.name
        )
        switch.namespace.ip("link", "set", port, "master", BRIDGE, "up")
        self.ip("addr", "add", address, "dev", ifname)
        self.ip("link", "set", ifname, "up")
        interface = Interface(self, ifname, address)
        self.interfaces.append(interface)
        return interface

    def route(self, destination: str, via: str) -> None:
        """Add a route, e.g. ``route("default", via="10.7.0.1")``."""
        self.ip("route", "add", destination, "via", via)

    def addresses(self) -> dict[str, list[str]]:
        """IPv4 ``address/prefix`` per interface name, as the kernel sees them."""
        links = json.loads(self.ip("-j", "addr", "show"))
        return {
            link["ifname"]: [
                f"{a['local']}/{a['prefixlen']}"
                for a in link.get("addr_info", [])
                if a.get("family") == "inet"
            ]
            for link in links
        }

    # -- firewall and traffic control --

    def nft(self, ruleset: str) -> None:
        """Load nftables commands/ruleset text into this namespace (``nft -f -``)."""
        self.run("nft", "-f", "-", input=ruleset)

    def masquerade(self, out_ifname: str, *, random_ports: bool = False) -> None:
        """Source-NAT everything leaving ``out_ifname`` to its address, and drop connections that
        arrive there unasked. By default the kernel keeps the source port when it is free (a
        port-preserving NAT); ``random_ports`` picks a random port for every new mapping
        (``masquerade random``, like many carrier-grade NATs)."""
        flags = " random" if random_ports else ""
        # Like a home router, it drops what arrives unasked on its public side. Besides being
        # what routers do, it matters for hole punching: an unanswered probe that reached the
        # router's own stack would leave a conntrack entry that takes the very port the inside
        # host's own probe must leave from, and the NAT would pick another.
        self.nft(
            "add table ip netlab_nat\n"
            "add chain ip netlab_nat postrouting"
            " { type nat hook postrouting priority srcnat; policy accept; }\n"
            f'add rule ip netlab_nat postrouting oifname "{out_ifname}" masquerade{flags}\n'
            "add chain ip netlab_nat input { type filter hook input priority 0; policy accept; }\n"
            f'add rule ip netlab_nat input iifname "{out_ifname}" ct state new drop\n'
            "add chain ip netlab_nat forward"
            " { type filter hook forward priority 0; policy accept; }\n"
            f'add rule ip netlab_nat forward iifname "{out_ifname}" ct state new drop\n'
        )

    def drop_randomly(self, ifname: str, percent: int, *, direction: str = "both") -> None:
        """Drop ``percent`` % of IPv4/IPv6 packets arriving (``in``), leaving (``out``) or both on
        ``ifname``, each packet independently (``numgen random mod 100 < N drop``)."""
        if not 0 <= percent <= 100:
            raise ValueError("percent is 0..100")
        if direction not in ("in", "out", "both"):
            raise ValueError("direction is 'in', 'out' or 'both'")
        # nft types the comparison like the numgen result (0..99), so 100 % is a plain drop.
        match = "" if percent == 100 else f" numgen random mod 100 < {percent}"
        lines = ["add table inet netlab_loss"]
        if direction in ("in", "both"):
            lines += [
                "add chain inet netlab_loss prerouting"
                " { type filter hook prerouting priority raw; policy accept; }",
                f'add rule inet netlab_loss prerouting iifname "{ifname}"{match} drop',
            ]
        if direction in ("out", "both"):
            lines += [
                "add chain inet netlab_loss postrouting"
                " { type filter hook postrouting priority 0; policy accept; }",
                f'add rule inet netlab_loss postrouting oifname "{ifname}"{match} drop',
            ]
        self.nft("\n".join(lines) + "\n")

    def clear_nft(self) -> None:
        """Remove every nftables table in this namespace (NAT and loss rules alike)."""
        self.run("nft", "flush", "ruleset")

    def limit_bandwidth(
        self, ifname: str, rate: str, *, burst: str = "32kbit", latency: str = "400ms"
    ) -> None:
        """Shape what leaves ``ifname`` to ``rate`` (e.g. "1mbit") with a token bucket (tc tbf);
        packets that would wait longer than ``latency`` are dropped."""
        tbf = ["tbf", "rate", rate, "burst", burst, "latency", latency]
        self.run("tc", "qdisc", "replace", "dev", ifname, "root", *tbf)

    def clear_bandwidth(self, ifname: str) -> None:
        self.run("tc", "qdisc", "del", "dev", ifname, "root", check=False)


# ---- processes speaking JSON lines ----


class Child:
    """A process that prints one JSON object per line; ``expect`` waits for a matching one.

    stdout is read by a thread into a queue (so waits have deadlines); stderr goes to a temporary
    file, shown when an expectation fails. Lines that are not JSON are kept as ``{"text": line}``.
    """

    def __init__(self, argv: Sequence[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.argv = list(argv)
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.popen = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self.received: list[dict[str, Any]] = []  # every message so far, in order
        self._unread: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name=f"netlab {argv[-1]}", daemon=True)
        self._reader.start()
        self._eof = False

    def send(self, message: dict[str, Any]) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(message) + "\n")
        self.popen.stdin.flush()

    def expect(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The next message (in arrival order) that satisfies ``predicate``; earlier ones are
        skipped but kept in ``received``. Fails with the process's stderr after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._eof:
                break
            try:
                message = self._unread.get(timeout=remaining)
            except queue.Empty:
                break
            if message is None:
                self._eof = True
                break
            if predicate(message):
                return message
        why = "exited" if self._eof else f"said nothing matching within {timeout} s"
        raise AssertionError(f"{self.argv[-1]!r} {why}; {self.describe()}")

    def seen(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first message so far that satisfies ``predicate``, even one an ``expect`` skipped
        over (events of separate tasks come in either order: a loaded box once sent a
        listener's first audio before its reach, which the reach's ``expect`` passed over);
        failing that, the next one."""
        for message in list(self.received):
            if predicate(message):
                return message
        return self.expect(predicate, timeout)

    def collect(self, seconds: float) -> list[dict[str, Any]]:
        """Every message that arrives during the next ``seconds``."""
        found: list[dict[str, Any]] = []

        def keep(message: dict[str, Any]) -> bool:
            found.append(message)
            return False

        with contextlib.suppress(AssertionError):
            self.expect(keep, seconds)
        return found

    def wait(self, timeout: float) -> int:
        """Wait for the process to end; returns its exit status."""
        return self.popen.wait(timeout)

    def describe(self) -> str:
        """The last messages and the end of stderr, for failure reports."""
        self._stderr.flush()
        self._stderr.seek(0)
        err = self._stderr.read()[-3000:]
        tail = "\n".join(json.dumps(m) for m in self.received[-10:])
        return f"status {self.popen.poll()}\nlast messages:\n{tail}\nstderr:\n{err}"

    def close(self) -> None:
        """Close stdin (a polite stop), then terminate, then kill; release every handle."""
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        try:
            self.popen.wait(3)
        except subprocess.TimeoutExpired:
            self.popen.terminate()
            try:
                self.popen.wait(3)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._stderr.close()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                message = {"text": line}
            if not isinstance(message, dict):
                message = {"value": message}
            self.received.append(message)
            self._unread.put(message)
        self._unread.put(None)


# ---- helpers ----


def list_namespaces() -> list[str]:
    """Names of every namespace ``ip netns`` knows (ours and anyone else's)."""
    out = _quiet(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _run(
    argv: list[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _quiet(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 1, "", str(exc))
