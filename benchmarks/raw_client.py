"""The floor for a batch: N sessions at concurrency C with nothing but asyncio streams.

    python benchmarks/raw_client.py N C PORT CAFILE HOST [HOST ...] [--rset] [--mark]

Each session opens a connection, reads the greeting, EHLO, STARTTLS with a full handshake
(one SSLContext that verifies the chain, no resumption), EHLO, MAIL, RCPT, (RSET with
--rset,) QUIT. With --rset that is what `smtp-probe batch --reuse 1 --no-tls-resume` does
for each target (it ends a transaction with RSET before QUIT), without recording,
interpreting or judging anything. Prints the seconds taken; with --mark, also a line after
each session (together.py counts them). Runs on uvloop when installed,
as smtp-probe does.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time


async def session(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    rcpt: str,
    name: str = "mx0.farm.test",
    rset: bool = False,
) -> None:
    """One session with nothing but asyncio streams (RSET before QUIT, with `rset`)."""
    reader, writer = await asyncio.open_connection(host, port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    async def cmd(c: bytes) -> bytes:
        writer.write(c + b"\r\n")
        await writer.drain()
        return await reply()

    await reply()
    await cmd(b"EHLO bench.test")
    await cmd(b"STARTTLS")
    await writer.start_tls(ctx, server_hostname=name)
    await cmd(b"EHLO bench.test")
    await cmd(b"MAIL FROM:<>")
    await cmd(f"RCPT TO:<{rcpt}>".encode())
    if rset:
        await cmd(b"RSET")
    await cmd(b"QUIT")
    writer.close()
    await writer.wait_closed()


async def main(
    n: int, c: int, port: int, cafile: str, hosts: list[str], rset: bool, mark: bool = False
) -> float:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False  # the farm's listeners share one certificate
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            await session(hosts[i % len(hosts)], port, ctx, f"user{i}@d{i}.test", rset=rset)
            if mark:
                sys.stdout.write(".\n")
                sys.stdout.flush()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return time.perf_counter() - t


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a not in ("--rset", "--mark")]
    rset, mark = "--rset" in sys.argv[1:], "--mark" in sys.argv[1:]
    n, c, port, cafile, *hosts = args
    try:
        import uvloop
    except ImportError:
        print(asyncio.run(main(int(n), int(c), int(port), cafile, hosts, rset, mark)))
    else:
        print(uvloop.run(main(int(n), int(c), int(port), cafile, hosts, rset, mark)))
