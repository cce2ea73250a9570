"""Capture every frame on one interface and report what mDNS crossed it.

    python -m tests.node.lan_helpers.sniff --iface eth0 --needle <peer id> ...

Prints ``ready`` once capturing; on ``{"cmd": "report"}`` or end of stdin prints ``report``: frame
counts, the IPv4 sources of mDNS (UDP 5353) frames, and how many frames held each needle.
"""

import argparse
import json
import select
import socket
import sys

ETH_P_ALL = 0x0003


def main(args: argparse.Namespace) -> None:
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    capture.bind((args.iface, 0))
    needles = {needle: 0 for needle in args.needle}
    frames = mdns = 0
    sources: set[str] = set()
    print(json.dumps({"event": "ready"}), flush=True)
    while True:
        readable, _, _ = select.select([capture, sys.stdin], [], [])
        if capture in readable:
            frame = capture.recv(65535)
            frames += 1
            for needle in needles:
                needles[needle] += needle.encode() in frame
            if frame[12:14] == b"\x08\x00" and frame[23] == 17:  # IPv4, UDP
                header = (frame[14] & 0x0F) * 4
                ports = frame[14 + header : 14 + header + 4]
                if b"\x14\xe9" in (ports[:2], ports[2:]):  # 5353
                    mdns += 1
                    sources.add(socket.inet_ntoa(frame[26:30]))
        if sys.stdin in readable:
            line = sys.stdin.readline()
            print(
                json.dumps(
                    {
                        "event": "report",
                        "frames": frames,
                        "mdns": mdns,
                        "mdns_sources": sorted(sources),
                        "needles": needles,
                    }
                ),
                flush=True,
            )
            if not line:
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", required=True)
    parser.add_argument("--needle", action="append", default=[])
    main(parser.parse_args())
