"""Benchmark the edge LMDB cache: batched puts/s and gets/s, against raw LMDB in the same run.

    .venv/bin/python bench/edge_cache.py [--puts 200000] [--gets 1000000] [--rounds 5]
                                         [--sync/--no-sync]

What is measured:
- puts: ``EdgeCache.put_many`` in batches of 1,000 (one write transaction, one commit each) of
  msgpack values of about 200 bytes, with the cache's default durability (``sync=True``: an
  fsync per commit) unless ``--no-sync``. One pass into an empty cache.
- gets: ``EdgeCache.get_many`` of random existing keys, 10,000 per read transaction: the
  decoded values a caller gets. After the timed passes the last batch is compared with what
  the puts wrote, value by value. Each round is one pass over all batches; the best round
  counts (the machine is shared: rounds absorb other processes' bursts, for both sides).
- baseline, in the same run and rounds: the same batches through raw py-lmdb ``getmulti``
  with ``sync=False`` and pre-encoded values, returning undecoded bytes (no decoding at all);
  ``raw_msgpack_gets_per_s`` adds ``msgpack.unpackb`` per value, what the cache did before.
- runs: the same, cache and baseline, with each batch made of runs of 100 consecutive keys
  from random starts (reading a source's recent samples): reported apart, as
  ``runs_gets_per_s``; the headline ``gets_per_s`` is the random pattern.
- breakdown (``--breakdown``, default on): where a get's time goes, per key: the whole
  ``get_many``; the lookup alone on one hot key (Python + py-lmdb call cost) and on the random
  keys (adds the memory stalls of a random page in a 50 MB map); the decoding alone (values
  already fetched: their memory is warm, so the parts add up to more than the whole), and
  ``msgpack.unpackb`` on the same values for comparison.

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

from datawave.datasource.edge.cache import EdgeCache, _unpack

PUT_BATCH = 1_000
GET_BATCH = 10_000
RUN = 100  # consecutive keys per run in the ``runs`` pattern


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


def _get_batches(n_keys: int, n_gets: int, seed: int, run: int = 1) -> list[list[int]]:
    """Key indexes, ``GET_BATCH`` per batch (the same for the cache and the baseline): runs of
    ``run`` consecutive keys from random starts (``run=1``: every key random)."""
    rng = random.Random(seed)
    picks: list[int] = []
    while len(picks) < n_gets:
        start = rng.randrange(n_keys - run + 1)
        picks.extend(range(start, start + run))
    picks = picks[:n_gets]
    return [picks[i : i + GET_BATCH] for i in range(0, n_gets, GET_BATCH)]


def _lookups(env: Any, db: Any, batches: list[list[bytes]]) -> None:
    """Raw py-lmdb lookups in one read transaction: values fetched as bytes, then dropped."""
    with env.begin() as txn, txn.cursor(db) as cur:
        for batch in batches:
            list(map(cur.get, batch))


def _decode_batches(decode: Any, batches: list[list[bytes]]) -> None:
    kept: list[Any] = []
    for batch in batches:  # one batch alive at a time, as a caller of get_many holds it
        kept = list(map(decode, batch))
    del kept


def _rate(n: int, fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


class Run:
    """One cache and one raw environment holding the same data, for rounds of gets."""

    def __init__(self, root: Path, n_puts: int, n_gets: int, *, sync: bool) -> None:
        self.keys = _keys(n_puts)
        self.values = [_value(i) for i in range(n_puts)]
        self.n_puts, self.n_gets = n_puts, n_gets
        self.use("random")
        self.cache = EdgeCache(root / "cache", sync=sync, map_size=256 << 20)
        self.env = lmdb.open(str(root / "raw"), map_size=256 << 20, max_dbs=1, sync=False,
                             metasync=False)  # fmt: skip
        self.db = self.env.open_db(b"health")

    def use(self, pattern: str) -> None:
        """``random``: every key random; ``runs``: runs of 100 consecutive keys (a source's
        recent samples, say) from random starts."""
        indexes = _get_batches(self.n_puts, self.n_gets, seed=1,
                               run=RUN if pattern == "runs" else 1)  # fmt: skip
        self.batches = [[self.keys[i] for i in b] for b in indexes]
        self.last_indexes = indexes[-1] if indexes else []

    def close(self) -> None:
        self.cache.close()
        self.env.close()

    # puts (once: a second pass would overwrite instead of insert) ---------------------------
    def cache_puts(self) -> float:
        keys, values = self.keys, self.values

        def run() -> None:
            for i in range(0, self.n_puts, PUT_BATCH):
                self.cache.put_many(
                    "health", zip(keys[i : i + PUT_BATCH], values[i : i + PUT_BATCH], strict=True)
                )

        return _rate(self.n_puts, run)

    def raw_puts(self) -> float:
        encoded = [msgpack.packb(v, use_bin_type=True) for v in self.values]
        keys = self.keys

        def run() -> None:
            for i in range(0, self.n_puts, PUT_BATCH):
                with self.env.begin(write=True) as txn, txn.cursor(self.db) as cur:
                    cur.putmulti(zip(keys[i : i + PUT_BATCH], encoded[i : i + PUT_BATCH],
                                     strict=True))  # fmt: skip

        return _rate(self.n_puts, run)

    # gets ------------------------------------------------------------------------------------
    def cache_gets(self) -> float:
        got = 0
        last: list[Any] = []

        def run() -> None:
            nonlocal got, last
            for batch in self.batches:
                last = self.cache.get_many("health", batch)
                got += len(last)

        rate = _rate(self.n_gets, run)
        assert got == self.n_gets
        assert last == [self.values[i] for i in self.last_indexes], "wrong values returned"
        return rate

    def raw_gets(self) -> float:
        got = 0

        def run() -> None:
            nonlocal got
            for batch in self.batches:
                with self.env.begin() as txn, txn.cursor(self.db) as cur:
                    got += len(cur.getmulti(batch))

        rate = _rate(self.n_gets, run)
        assert got == self.n_gets
        return rate

    def raw_msgpack_gets(self) -> float:
        unpack = msgpack.unpackb
        got = 0

        def run() -> None:
            nonlocal got
            for batch in self.batches:
                with self.env.begin() as txn, txn.cursor(self.db) as cur:
                    pairs = cur.getmulti(batch)
                got += len([unpack(v) for _, v in pairs])

        rate = _rate(self.n_gets, run)
        assert got == self.n_gets
        return rate

    def breakdown(self) -> dict[str, float]:
        """Nanoseconds per key of a cache get and of its parts, on the first 20 batches (best
        of 3 each)."""
        hot = [self.keys[len(self.keys) // 2]] * GET_BATCH
        batches = self.batches[:20]
        n = GET_BATCH * len(batches)

        with self.env.begin() as txn, txn.cursor(self.db) as cur:
            raws = [list(map(cur.get, b)) for b in batches]
        unpackb, get_many = msgpack.unpackb, self.cache.get_many
        parts: dict[str, Any] = {
            "get_many_ns": lambda: [get_many("health", b) for b in batches],
            "lookup_hot_key_ns": lambda: _lookups(self.env, self.db, [hot] * len(batches)),
            "lookup_random_ns": lambda: _lookups(self.env, self.db, batches),
            "decode_ns": lambda: _decode_batches(_unpack, raws),
            "msgpack_unpackb_ns": lambda: _decode_batches(unpackb, raws),
        }
        ns = {k: min(1e9 / _rate(n, fn) for _ in range(3)) for k, fn in parts.items()}
        return {k: round(v) for k, v in ns.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--puts", type=int, default=200_000)
    parser.add_argument("--gets", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5, help="gets rounds; the best counts")
    parser.add_argument("--sync", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp cache dirs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dw-bench-cache-", dir=args.dir) as tmp:
        run = Run(Path(tmp), args.puts, args.gets, sync=args.sync)
        try:
            raw_puts = run.raw_puts()
            puts = run.cache_puts()
            rounds: dict[str, list[float]] = {"cache": [], "raw": [], "raw_msgpack": []}
            for _ in range(args.rounds):  # interleaved: both sides see the same machine
                rounds["raw"].append(run.raw_gets())
                rounds["cache"].append(run.cache_gets())
                rounds["raw_msgpack"].append(run.raw_msgpack_gets())
            parts = run.breakdown() if args.breakdown else {}
            run.use("runs")
            runs: dict[str, list[float]] = {"cache": [], "raw": []}
            for _ in range(args.rounds):
                runs["raw"].append(run.raw_gets())
                runs["cache"].append(run.cache_gets())
        finally:
            run.close()

    gets, raw_gets, raw_msgpack = (max(rounds[k]) for k in ("cache", "raw", "raw_msgpack"))
    err = sys.stderr
    print(f"edge cache (sync={args.sync}): {puts:12,.0f} puts/s  {gets:12,.0f} gets/s", file=err)
    print(f"raw lmdb   (sync=False): {raw_puts:12,.0f} puts/s  {raw_gets:12,.0f} gets/s"
          "  (getmulti, values not decoded)", file=err)  # fmt: skip
    print(f"raw lmdb + msgpack.unpackb per value: {'':7} {raw_msgpack:12,.0f} gets/s", file=err)
    print("gets per round: " + "; ".join(f"{k} " + ", ".join(f"{r:,.0f}" for r in v)
                                         for k, v in rounds.items()), file=err)  # fmt: skip
    if parts:
        print("per key (random): " + ", ".join(f"{k} {v}" for k, v in parts.items()), file=err)
    run_gets, run_raw = max(runs["cache"]), max(runs["raw"])
    print(f"runs of {RUN} consecutive keys: cache {run_gets:,.0f} gets/s, raw getmulti "
          f"{run_raw:,.0f} gets/s", file=err)  # fmt: skip
    result = {
        "puts_per_s": round(puts),
        "gets_per_s": round(gets),
        "baseline_puts_per_s": round(raw_puts),
        "baseline_gets_per_s": round(raw_gets),
        "raw_msgpack_gets_per_s": round(raw_msgpack),
        "gets_rounds": [round(r) for r in rounds["cache"]],
        "runs_gets_per_s": round(run_gets),
        "baseline_runs_gets_per_s": round(run_raw),
        **parts,
        "sync": args.sync,
        "puts": args.puts,
        "gets": args.gets,
        "put_batch": PUT_BATCH,
        "get_batch": GET_BATCH,
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
