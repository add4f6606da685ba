"""bench/decode_batch.py's parts that need no engine: the fit, the checks on
what the engine counted, and the single engine's flags."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import decode_batch  # noqa: E402
import pd_bench  # noqa: E402
import seed_scenarios as sc  # noqa: E402


def test_the_fit_recovers_a_line():
    a, k = decode_batch.fit([(1, 30.0), (2, 34.5), (3, 39.0), (4, 43.5)])
    assert a == pytest.approx(25.5) and k == pytest.approx(4.5)


def rep(finished=2, hits=0, peak=2.0):
    return {"tpot_ms": 30.0, "itl_p50_ms": 29.0, "completed": finished, "finished": finished,
            "prefix_hits": hits, "peak_running": peak}


@pytest.mark.parametrize("bad", [rep(finished=1), rep(hits=128), rep(peak=1.0)])
def test_a_run_that_did_not_decode_its_batch_from_scratch_fails_its_check(bad):
    rows = [{"input_len": 1024, "batch": 2, "reps": [rep(), bad]}]
    assert [ok for ok, _ in decode_batch.checks(rows)] == [True, False]


def test_the_engine_runs_with_the_cluster_ranks_flags():
    assert pd_bench.ENGINE_ARGS.startswith(sc.base_engine_args())
    assert "--max-num-seqs 4" in pd_bench.ENGINE_ARGS
    assert max(decode_batch.BATCHES) == 4  # no batch the cluster's ranks cannot run
