#!/usr/bin/env python3
"""A link with a round trip: a TCP proxy on loopback that holds every chunk for half the
round trip in each direction (this kernel has no netem). Bandwidth is not limited; order is
kept; a half-close is passed on after the same delay.

    delay_proxy.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT RTT_MS

Prints "ready" once it listens. Runs until killed.
"""
import asyncio
import sys

CHUNK = 1 << 16
# Chunks held per direction before the sender is slowed down (16 MiB at most in flight).
HELD = 256


async def pump(reader, writer, one_way):
    loop = asyncio.get_running_loop()
    held = asyncio.Queue(maxsize=HELD)

    async def deliver():
        while True:
            due, data = await held.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            await held.put((loop.time() + one_way, data or None))
            if not data:
                break
        await delivering
    except (ConnectionError, asyncio.IncompleteReadError):
        delivering.cancel()


async def serve(upstream_host, upstream_port, one_way, client_reader, client_writer):
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(upstream_host, upstream_port)
    except OSError:
        client_writer.close()
        return
    # The connection's set-up costs a round trip too.
    await asyncio.sleep(2 * one_way)
    try:
        await asyncio.gather(
            pump(client_reader, upstream_writer, one_way),
            pump(upstream_reader, client_writer, one_way),
        )
    finally:
        for writer in (client_writer, upstream_writer):
            writer.close()


async def main():
    listen_port, upstream_host, upstream_port, rtt_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    one_way = rtt_ms / 2000.0
    server = await asyncio.start_server(
        lambda r, w: serve(upstream_host, upstream_port, one_way, r, w), "127.0.0.1", int(listen_port)
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
