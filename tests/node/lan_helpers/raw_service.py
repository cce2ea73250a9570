"""Plain zeroconf on one address, optionally registering a p2pvoix service with any TXT at all.

    python -m tests.node.lan_helpers.raw_service --address 10.0.0.5 [--label L --txt k=v ...]

Without ``--label`` it only joins the mDNS group on that address, as avahi does on every interface.
Prints ``ready`` once registered; closing stdin unregisters and exits.
"""

import argparse
import asyncio
import json
import socket

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

SERVICE_TYPE = "_p2pvoix._tcp.local."


async def main(args: argparse.Namespace) -> None:
    zc = AsyncZeroconf(interfaces=[args.address], ip_version=IPVersion.V4Only)
    if args.label:
        properties = dict(item.encode().split(b"=", 1) for item in args.txt)
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{args.label}.{SERVICE_TYPE}",
            port=4001,
            properties=properties,
            server=f"{args.label}.local.",
            addresses=[socket.inet_aton(args.address)],
        )
        await (await zc.async_register_service(info))
    print(json.dumps({"event": "ready"}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, input_until_eof)
    await zc.async_close()


def input_until_eof() -> None:
    try:
        while True:
            input()
    except EOFError:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--label")
    parser.add_argument("--txt", action="append", default=[])
    asyncio.run(main(parser.parse_args()))
