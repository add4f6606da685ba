"""End to end: two vLLM CPU engine processes (tiny Llama, dummy weights) share
one kvtier store; the second engine hits the first engine's prefix."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "vllm"))
from e2e_flow import run  # noqa: E402

pytestmark = pytest.mark.e2e


def test_engine_b_hits_engine_a_prefix(tmp_path):
    r = run(prompt_len=2000, workdir=tmp_path)
    print(r)
    # 80% of 2000 tokens = 1600 shared; hits are whole 128-token blocks: 12 = 1536.
    assert r["b_external_hit_tokens"] == 1536, r
    # kvtier's own series on B's /metrics count the same hit: 12 blocks, all
    # loaded by B's one rank (summed over the tiers that served them).
    assert r["b_kvtier_hit_blocks"] == 12, r
    assert r["b_kvtier_tier_hit_blocks"] == 12, r
    assert r["b_kvtier_load_bytes"] > 0, r
    assert r["same_output"], r
    # The issue asks for a lower TTFT; the measured margin (about 3x) is recorded by the demo.
    assert r["ttft_b_cache_s"] < r["ttft_b_nocache_s"], r
    assert r["b_loaded_log"] and "0 failed" in r["b_loaded_log"][0], r
