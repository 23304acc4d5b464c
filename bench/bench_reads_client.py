"""The read client of benchmark 8 (`bench.bench_reads`), in a process of its own so that its
work is not on the server's event loop.

    python -m bench.bench_reads_client URL N QUICK(0|1)

Prints one JSON line: per phase its name, its monotonic start and end (the server matches
them with its loop monitor's samples) and the latency of each request in seconds.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import aiohttp

from stream_risk.sidecar.positions import encode_cursor

PAGE = "/positions?limit=100&cursor={}"
SPARSE = "/positions?action=LIQUIDATE&limit=100&cursor={}"
BIG = "/positions?limit=1000&cursor={}"


async def timed(s: aiohttp.ClientSession, url: str) -> float:
    t = time.perf_counter()
    async with s.get(url) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status}")
    return time.perf_counter() - t


async def main(base: str, n: int, quick: bool) -> list[dict[str, Any]]:
    rnd = random.Random(7)

    def at(path: str) -> str:
        return base + path.format(encode_cursor(f"pos-{rnd.randrange(n):07d}"))

    reps = 40 if quick else 200
    out: list[dict[str, Any]] = []

    async def phase(s: aiohttp.ClientSession, name: str, urls: list[str]) -> None:
        t0 = time.monotonic()
        lat = [await timed(s, u) for u in urls]
        out.append({"name": name, "t0": t0, "t1": time.monotonic(), "lat": lat})

    async with aiohttp.ClientSession() as s:
        await timed(s, base + "/healthz")
        await phase(s, "healthz", [base + "/healthz"] * (reps * 2))
        await phase(s, "page", [at(PAGE) for _ in range(reps)])
        await phase(s, "filtered", [at(SPARSE) for _ in range(reps)])
        await phase(s, "page1000", [at(BIG) for _ in range(reps // 4)])
        ids = [f"pos-{rnd.randrange(n):07d}" for _ in range(reps * 2)]
        await phase(s, "one", [f"{base}/positions/{pid}" for pid in ids])
        await phase(s, "exposure", [base + "/exposure"] * reps)

        # Reads under load: two clients loop over the three reads while /healthz is
        # probed every 10 ms.
        stop = asyncio.Event()

        async def reader() -> int:
            k = 0
            async with aiohttp.ClientSession() as s2:
                while not stop.is_set():
                    await timed(s2, at((PAGE, SPARSE, BIG)[k % 3]))
                    k += 1
            return k

        t0 = time.monotonic()
        readers = [asyncio.create_task(reader()) for _ in range(2)]
        lat = []
        end = time.monotonic() + (3 if quick else 15)
        while time.monotonic() < end:
            lat.append(await timed(s, base + "/healthz"))
            await asyncio.sleep(0.01)
        stop.set()
        reads = sum(await asyncio.gather(*readers))
        out.append(
            {
                "name": "healthz_under_reads",
                "t0": t0,
                "t1": time.monotonic(),
                "lat": lat,
                "reads": reads,
            }
        )
    return out


if __name__ == "__main__":
    url, count, quick = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    print(json.dumps(asyncio.run(main(url, count, quick))))
