"""Benchmark the edge LMDB cache: batched puts/s and gets/s, against raw LMDB in the same run.

    .venv/bin/python bench/edge_cache.py [--puts 200000] [--gets 1000000] [--sync/--no-sync]

What is measured:
- puts: ``EdgeCache.put_many`` in batches of 1,000 (one write transaction, one commit each) of
  msgpack values of about 200 bytes, with the cache's default durability (``sync=True``: an
  fsync per commit) unless ``--no-sync``.
- gets: ``EdgeCache.get_many`` of random existing keys, 10,000 per read transaction, each value
  decoded from msgpack.
- baseline: the same batches through raw py-lmdb with ``sync=False`` and pre-encoded bytes (no
  msgpack, no fsync), i.e. the ceiling this machine allows for the access pattern; plus
  ``raw_msgpack_gets_per_s``, the raw gets with msgpack decoding, to tell the cost of decoding
  from the cost of this wrapper.

The final line is one JSON object:
``{"puts_per_s", "gets_per_s", "baseline_puts_per_s", "baseline_gets_per_s", ...}``.
Bar: >= 100,000 puts/s and >= 500,000 gets/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from datawave.datasource.edge.cache import EdgeCache

PUT_BATCH = 1_000
GET_BATCH = 10_000


def _value(i: int) -> dict[str, Any]:
    """A health sample as the agent records it: ~200 bytes of msgpack."""
    return {
        "source": f"pg-prod-eu-west-{i % 97:02d}/orders",
        "ts": 1_732_560_000.0 + i,
        "state": "ok" if i % 13 else "degraded",
        "latency_ms": 12.75 + (i % 1000) / 10,
        "rows": 1_000_000 + i,
        "bytes": 9_876_543_210 + i,
        "error": None,
        "detail": "connect ok; catalog read in 3 steps; schema public: 42 tables, 311 columns",
    }


def _keys(n: int) -> list[bytes]:
    return [f"health/{i:012d}".encode() for i in range(n)]


def _get_batches(keys: list[bytes], n_gets: int, seed: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    picks = [keys[rng.randrange(len(keys))] for _ in range(n_gets)]
    return [picks[i : i + GET_BATCH] for i in range(0, n_gets, GET_BATCH)]


def bench_cache(path: Path, n_puts: int, n_gets: int, *, sync: bool) -> tuple[float, float]:
    keys = _keys(n_puts)
    values = [_value(i) for i in range(n_puts)]
    batches = _get_batches(keys, n_gets, seed=1)
    with EdgeCache(path, sync=sync, map_size=256 << 20) as cache:
        t0 = time.perf_counter()
        for i in range(0, n_puts, PUT_BATCH):
            cache.put_many(
                "health", zip(keys[i : i + PUT_BATCH], values[i : i + PUT_BATCH], strict=True)
            )
        put_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        got = 0
        for batch in batches:
            got += len(cache.get_many("health", batch))
        get_s = time.perf_counter() - t0
        assert got == n_gets
        assert cache.get("health", keys[-1]) == values[-1]
    return n_puts / put_s, n_gets / get_s


def bench_raw(path: Path, n_puts: int, n_gets: int) -> tuple[float, float, float]:
    keys = _keys(n_puts)
    encoded = [msgpack.packb(_value(i)) for i in range(n_puts)]
    batches = _get_batches(keys, n_gets, seed=1)
    env = lmdb.open(str(path), map_size=256 << 20, max_dbs=1, sync=False, metasync=False)
    db = env.open_db(b"health")
    try:
        t0 = time.perf_counter()
        for i in range(0, n_puts, PUT_BATCH):
            with env.begin(write=True) as txn, txn.cursor(db) as cur:
                cur.putmulti(zip(keys[i : i + PUT_BATCH], encoded[i : i + PUT_BATCH], strict=True))
        put_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        got = 0
        for batch in batches:
            with env.begin() as txn, txn.cursor(db) as cur:
                got += len(cur.getmulti(batch))
        get_s = time.perf_counter() - t0
        assert got == n_gets

        # The same raw gets plus msgpack decoding: what any msgpack-on-LMDB cache pays here.
        unpack = msgpack.unpackb
        t0 = time.perf_counter()
        for batch in batches:
            with env.begin() as txn, txn.cursor(db) as cur:
                pairs = cur.getmulti(batch)
            got += len([unpack(v) for _, v in pairs])
        decode_get_s = time.perf_counter() - t0
    finally:
        env.close()
    return n_puts / put_s, n_gets / get_s, n_gets / decode_get_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--puts", type=int, default=200_000)
    parser.add_argument("--gets", type=int, default=1_000_000)
    parser.add_argument("--sync", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp cache dirs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dw-bench-cache-", dir=args.dir) as tmp:
        raw_puts, raw_gets, raw_decode_gets = bench_raw(Path(tmp) / "raw", args.puts, args.gets)
        puts, gets = bench_cache(Path(tmp) / "cache", args.puts, args.gets, sync=args.sync)

    print(
        f"edge cache (sync={args.sync}): {puts:12,.0f} puts/s  {gets:12,.0f} gets/s",
        file=sys.stderr,
    )
    print(
        f"raw lmdb   (sync=False): {raw_puts:12,.0f} puts/s  {raw_gets:12,.0f} gets/s",
        file=sys.stderr,
    )
    print(f"raw lmdb + msgpack decode: {'':14} {raw_decode_gets:12,.0f} gets/s", file=sys.stderr)
    result = {
        "puts_per_s": round(puts),
        "gets_per_s": round(gets),
        "baseline_puts_per_s": round(raw_puts),
        "baseline_gets_per_s": round(raw_gets),
        "raw_msgpack_gets_per_s": round(raw_decode_gets),
        "sync": args.sync,
        "puts": args.puts,
        "gets": args.gets,
        "put_batch": PUT_BATCH,
        "get_batch": GET_BATCH,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
