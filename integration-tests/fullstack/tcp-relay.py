#!/usr/bin/env python3
"""A TCP relay: listens on LISTEN_HOST:LISTEN_PORT and forwards each connection, bytes as they
are, to TARGET_HOST:TARGET_PORT. fullstack.sh runs it so that pods reach the 389-ds fixture,
which listens on 127.0.0.1 only, at an address whose certificate SAN the fixture already has
(10.0.2.100), from the host and from the pods alike. TLS passes through untouched.

Usage: tcp-relay.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
"""
import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def main(listen_host, listen_port, target_host, target_port):
    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError as e:
            print(f"tcp-relay: cannot reach {target_host}:{target_port}: {e}", file=sys.stderr)
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(handle, listen_host, listen_port, reuse_address=True)
    print(f"tcp-relay: {listen_host}:{listen_port} -> {target_host}:{target_port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
