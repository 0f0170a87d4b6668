"""The floor under the edge cache's gets bar: what py-lmdb itself does with random keys here.

``bench/edge_cache.py``'s bar asks for >= 500,000 decoded gets/s of random existing keys (200,000
keys of ~200-byte values, batches of 10,000 per read transaction). A cache get is a B-tree lookup
plus decoding the value into Python objects; this benchmark measures, on the same data shape and
the same key batches, the parts no cache built on py-lmdb can avoid:
  (a) raw_random      ``map(cursor.get, keys)`` of random keys, values returned as bytes and
                      never decoded — the fastest a py-lmdb lookup returns anything;
  (a') raw_getmulti   the same through ``cursor.getmulti`` (the loop in C);
  (b) raw_hot         the same call on one hot key: the Python + py-lmdb cost without the memory
                      stalls of a random page (a - b is what the memory costs);
  (c) by_value_size   (a) with 190 / 100 / 20-byte values (smaller maps: 46 / 26 / 10 MB);
  (d) two_threads     (a') split over two reader threads (LMDB readers never block each other;
                      py-lmdb holds the GIL during lookups);
  (e) decode_*        decoding values already fetched and cache-resident (1,000 distinct ones
                      cycled), the results kept in batches of 10,000 as a caller keeps them:
                      msgspec into dicts (what the cache does), msgspec into a typed
                      ``msgspec.Struct``, and ``msgpack.unpackb``.
A get runs (a) then (e) on one thread, so ``lookup_plus_decode_per_s`` = 1 / (1/(a) + 1/(e)) is
about the most a cache returning dicts can reach here (``lookup_plus_struct_decode_per_s`` with
typed records); if (a) itself is at or below 500,000/s, no cache that decodes can meet the bar.
Prints one JSON line last.

Usage: python bench/edge_cache_floor.py [--keys 200000] [--gets 400000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_cache import GET_BATCH, _decode_batches, _get_batches, _keys, _lookups, _rate, _value

BAR = 500_000
WARM = 1_000  # distinct values the decode measures cycle through


class _Sample(msgspec.Struct):
    """The benchmark's value as a typed record (for the decode comparison only)."""

    source: str
    ts: float
    state: str
    latency_ms: float
    rows: int
    bytes: int
    error: str | None
    detail: str


def _best_rate(n: int, fn: Callable[[], object], repeat: int) -> float:
    return max(_rate(n, fn) for _ in range(repeat))


def _env(root: Path, name: str, keys: list[bytes], values: list[bytes]) -> tuple[Any, Any]:
    env = lmdb.open(str(root / name), map_size=256 << 20, max_dbs=1, sync=False, metasync=False)
    db = env.open_db(b"health")
    with env.begin(write=True) as txn, txn.cursor(db) as cur:
        cur.putmulti(list(zip(keys, values, strict=True)))
    return env, db


def _getmulti(env: Any, db: Any, batches: list[list[bytes]]) -> None:
    with env.begin() as txn, txn.cursor(db) as cur:
        for batch in batches:
            cur.getmulti(batch)


def _threads(env: Any, db: Any, batches: list[list[bytes]], n: int) -> None:
    workers = [threading.Thread(target=_getmulti, args=(env, db, batches[i::n])) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--gets", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=5, help="passes per measure; best counts")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp environments")
    args = parser.parse_args(argv)

    keys = _keys(args.keys)
    encode = msgspec.msgpack.Encoder().encode
    values = [encode(_value(i)) for i in range(args.keys)]
    batches = [[keys[i] for i in b] for b in _get_batches(args.keys, args.gets, seed=1)]
    hot = [[keys[args.keys // 2]] * len(b) for b in batches]
    n, rep = args.gets, args.repeat
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dw-bench-floor-", dir=args.dir) as tmp:
        root = Path(tmp)
        env, db = _env(root, "full", keys, values)
        try:
            result["raw_random_gets_per_s"] = _best_rate(n, lambda: _lookups(env, db, batches), rep)
            result["raw_getmulti_gets_per_s"] = _best_rate(
                n, lambda: _getmulti(env, db, batches), rep
            )
            result["raw_hot_gets_per_s"] = _best_rate(n, lambda: _lookups(env, db, hot), rep)
            result["two_threads_gets_per_s"] = _best_rate(
                n, lambda: _threads(env, db, batches, 2), rep
            )
            with env.begin() as txn, txn.cursor(db) as cur:
                warm = list(map(cur.get, batches[0][:WARM]))
            # Decoding is measured on warm input (WARM distinct values, cache-resident, as the
            # value a get has just copied is), its output kept in batches like a caller's.
            raws = [(warm * (len(b) // WARM + 1))[: len(b)] for b in batches]
        finally:
            env.close()
        decoders: dict[str, Callable[[bytes], Any]] = {
            "decode_dict_per_s": msgspec.msgpack.Decoder().decode,
            "decode_struct_per_s": msgspec.msgpack.Decoder(_Sample).decode,
            "decode_msgpack_unpackb_per_s": msgpack.unpackb,
        }
        for name, dec in decoders.items():
            result[name] = _best_rate(n, lambda d=dec: _decode_batches(d, raws), rep)
        by_size: dict[str, float] = {}
        for size in (190, 100, 20):
            env, db = _env(root, f"v{size}", keys, [os.urandom(size) for _ in keys])
            try:
                by_size[str(size)] = round(
                    _best_rate(n, lambda e=env, d=db: _lookups(e, d, batches), rep)
                )
                by_size[f"{size}_map_mb"] = round(
                    os.path.getsize(root / f"v{size}/data.mdb") / 2**20
                )
            finally:
                env.close()
    out = {k: round(v) for k, v in result.items()}
    raw, dec = result["raw_random_gets_per_s"], result["decode_dict_per_s"]
    floor = 1 / (1 / raw + 1 / dec)  # a lookup then a decode, nothing else
    floor_struct = 1 / (1 / raw + 1 / result["decode_struct_per_s"])
    err = sys.stderr
    print(f"random lookups, values not decoded: {raw:12,.0f}/s  (getmulti "
          f"{result['raw_getmulti_gets_per_s']:,.0f}/s, one hot key "
          f"{result['raw_hot_gets_per_s']:,.0f}/s, two threads "
          f"{result['two_threads_gets_per_s']:,.0f}/s)", file=err)  # fmt: skip
    print(f"decoding: dicts {dec:,.0f}/s, Struct {result['decode_struct_per_s']:,.0f}/s, "
          f"msgpack.unpackb {result['decode_msgpack_unpackb_per_s']:,.0f}/s", file=err)  # fmt: skip
    print(f"lookups by value size: {by_size}", file=err)
    print(f"lookup + decode, summed: {floor:,.0f}/s into dicts, {floor_struct:,.0f}/s into a "
          f"Struct, against the bar of {BAR:,}", file=err)  # fmt: skip
    print(json.dumps({
        **out,
        "lookups_by_value_size_per_s": by_size,
        "lookup_plus_decode_per_s": round(floor),
        "lookup_plus_struct_decode_per_s": round(floor_struct),
        "bar_gets_per_s": BAR,
        "bar_reachable_without_decoding": raw >= BAR,
        "keys": args.keys,
        "gets": n,
        "get_batch": GET_BATCH,
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
