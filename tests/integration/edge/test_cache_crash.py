"""SIGKILL a process in the middle of writing its EdgeCache; the reopened cache is consistent.

The writer appends outbox batches, puts snapshot batches, acknowledges now and then and starts
from a tiny map so kills also land during map growth. It prints the last sequence number of
each committed batch. After the kill, every printed batch must be there, every batch must be
whole (LMDB commits all of a transaction or none of it), and the queue must continue where it
stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datawave.datasource.edge.cache import EdgeCache

BATCH = 50

WRITER = f"""
import sys
from datawave.datasource.edge.cache import EdgeCache

BATCH = {BATCH}
cache = EdgeCache(sys.argv[1], node="crash", map_size=128 * 1024)
i = cache.get("meta", "test.batches", 0)
while True:
    i += 1
    seqs = cache.outbox_append([{{"i": i, "k": k, "pad": "x" * 300}} for k in range(BATCH)])
    cache.put_many(
        "snapshots",
        [(f"snap/{{i:08d}}/{{k:03d}}", {{"i": i, "k": k, "pad": "y" * 300}}) for k in range(BATCH)]
        + [("meta-batches", i)],
    )
    cache.put("meta", "test.batches", i)
    if i % 7 == 0:
        cache.outbox_ack(seqs[0] - 1)  # leave the newest batch unacknowledged
    print(seqs[-1], flush=True)
"""


def _run_and_kill(path: Path, batches_before_kill: int) -> int:
    """Start the writer, SIGKILL it after it reported that many commits; last reported seq."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    last = 0
    deadline = time.monotonic() + 120
    try:
        for _ in range(batches_before_kill):
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer died: {proc.stderr.read() if proc.stderr else ''}")
            last = int(line)
            assert time.monotonic() < deadline, "writer too slow"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return last


def _check_consistent(path: Path, last_reported: int) -> int:
    with EdgeCache(path) as cache:
        assert cache.node == "crash"
        acked = cache.outbox_acked()
        entries = cache.outbox_read(acked, limit=10**9)
        seqs = [e.seq for e in entries]

        # Nothing reported as committed is lost, and the queue has no holes.
        assert seqs, "the newest batch is never acknowledged, so the outbox cannot be empty"
        top = seqs[-1]
        assert top >= last_reported
        assert seqs == list(range(acked + 1, top + 1))
        assert cache.outbox_depth() == len(seqs)

        # Whole batches only; every record intact and carrying its stable id.
        assert top % BATCH == 0 and acked % BATCH == 0
        for e in entries:
            i, k = divmod(e.seq - 1, BATCH)
            assert e.record == {
                "i": i + 1,
                "k": k,
                "pad": "x" * 300,
                "rid": f"crash:{e.seq}",
                "seq": e.seq,
            }

        # Snapshot batches are atomic too.
        per_batch: dict[str, int] = {}
        for key, value in cache.iter("snapshots", "snap/"):
            batch = key.decode().split("/")[1]
            per_batch[batch] = per_batch.get(batch, 0) + 1
            assert value["pad"] == "y" * 300
        assert set(per_batch.values()) <= {BATCH}

        # The queue continues after the crash without reusing a sequence number. (The probe is
        # a whole batch shaped like the writer's, so the next round's checks still hold.)
        i = top // BATCH + 1
        probe = [{"i": i, "k": k, "pad": "x" * 300} for k in range(BATCH)]
        assert cache.outbox_append(probe) == list(range(top + 1, top + BATCH + 1))
        cache.put("meta", "test.batches", i)
        return top + BATCH


@pytest.mark.timeout(600)
def test_outbox_survives_sigkill_mid_write_and_continues(tmp_path: Path) -> None:
    path = tmp_path / "node-cache"
    previous_top = 0
    for round_, kill_after in enumerate((40, 25, 60)):
        reported = _run_and_kill(path, kill_after)
        top = _check_consistent(path, reported)
        assert top > previous_top, f"round {round_}: no progress"
        previous_top = top
