"""A slow WAN link on loopback: a TCP proxy with a rate limit and a one-way delay.

Each direction is one link shared by every connection through the proxy: a
token bucket (refilled at the link rate, holding at most one segment) paces
the bytes as a serial line would, then a delay queue holds each segment for
the one-way propagation delay before it is written on. The proxy's sockets
get a small receive buffer, so the sender sees back-pressure after about as
much queued data as a modem would hold, not after megabytes of loopback
buffering. Byte counts per direction are printed as JSON on exit.

Run: python -m bench.throttle_proxy --upstream-port 8883 --rate-kbit 128 --delay-ms 300
     (prints {"port": N} once listening; stops on SIGTERM or SIGINT)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

SEGMENT_BYTES = 1460  # a TCP segment on Ethernet; the bucket never holds more than one
READ_BYTES = 64 * 1024
SOCKET_BUFFER_BYTES = 16 * 1024  # Linux doubles it: ~32 KiB queued per socket


class TokenBucket:
    """`rate` bytes per second, at most `burst` bytes at once."""

    def __init__(self, rate: float, burst: int) -> None:
        """Start full."""
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = asyncio.get_running_loop().time()

    async def take(self, size: int) -> None:
        """Wait until `size` (<= burst) bytes may go, then spend them."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= size:
                self.tokens -= size
                return
            await asyncio.sleep((size - self.tokens) / self.rate)


@dataclass
class OneWayLink:
    """One direction of the WAN: serialisation at the link rate, then propagation delay."""

    rate_bytes_s: float
    delay_s: float
    carried: int = 0
    bucket: TokenBucket | None = field(default=None, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Move bytes from `reader` to `writer` through the link until EOF."""
        if self.bucket is None:
            self.bucket = TokenBucket(self.rate_bytes_s, SEGMENT_BYTES)
        in_flight: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        deliverer = asyncio.create_task(self._deliver(in_flight, writer))
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(READ_BYTES):
                for start in range(0, len(data), SEGMENT_BYTES):
                    segment = data[start:start + SEGMENT_BYTES]
                    async with self.lock:  # connections share the line, one segment at a time
                        await self.bucket.take(len(segment))
                    self.carried += len(segment)
                    in_flight.put_nowait((loop.time() + self.delay_s, segment))
        except (ConnectionError, OSError):
            pass
        finally:
            in_flight.put_nowait(None)
            await deliverer

    @staticmethod
    async def _deliver(in_flight: asyncio.Queue[tuple[float, bytes] | None],
                       writer: asyncio.StreamWriter) -> None:
        """Write each segment once its delay has passed (the delay is constant: FIFO)."""
        loop = asyncio.get_running_loop()
        try:
            while (item := await in_flight.get()) is not None:
                due, segment = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(segment)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass


@dataclass
class ThrottleProxy:
    """Listens on loopback and forwards each connection to the upstream port over two links."""

    upstream_port: int
    up: OneWayLink
    down: OneWayLink
    connections: int = 0

    async def serve(self, port: int = 0) -> asyncio.Server:
        """Start listening (port 0: any free port)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        sock.bind(("127.0.0.1", port))
        return await asyncio.start_server(self._handle, sock=sock)

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        """One client connection: dial upstream and pump both directions."""
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port, limit=READ_BYTES)
        except OSError:
            client_w.close()
            return
        server_w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                     SOCKET_BUFFER_BYTES)
        with contextlib.suppress(asyncio.CancelledError):  # shutting down: close both ends
            await asyncio.gather(self.up.carry(client_r, server_w),
                                 self.down.carry(server_r, client_w))
        for writer in (client_w, server_w):
            writer.close()

    def stats(self) -> dict[str, int]:
        """Bytes carried each way and connections accepted."""
        return {"bytes_up": self.up.carried, "bytes_down": self.down.carried,
                "connections": self.connections}


async def run(upstream_port: int, rate_kbit: float, delay_ms: float, port: int) -> None:
    """Serve until SIGTERM/SIGINT, printing the port first and the byte counts last."""
    rate = rate_kbit * 1000 / 8
    proxy = ThrottleProxy(upstream_port, OneWayLink(rate, delay_ms / 1000),
                          OneWayLink(rate, delay_ms / 1000))
    server = await proxy.serve(port)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    print(json.dumps(proxy.stats()), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options and run the proxy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-port", type=int, required=True,
                        help="Port on 127.0.0.1 to forward to (the broker).")
    parser.add_argument("--rate-kbit", type=float, default=128.0,
                        help="Link rate each way, in kbit/s (default 128).")
    parser.add_argument("--delay-ms", type=float, default=300.0,
                        help="One-way delay, in milliseconds (default 300).")
    parser.add_argument("--port", type=int, default=0, help="Port to listen on (default: any).")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.upstream_port, args.rate_kbit, args.delay_ms, args.port))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
