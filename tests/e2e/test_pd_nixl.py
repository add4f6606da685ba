"""End to end: the seed's PD deployment with P->D point to point through
vLLM's NixlConnector, the seed's connector shape: prefill DP2 runs
MultiConnector[NixlConnector, UCMConnector] (the shared prefix cache stays on
the prefill side), decode DP1 runs NixlConnector (kv_buffer_device cpu on
this machine) and pulls the KV from the prefill rank. Brought up by
`kvtier-launch --cluster` with KVTIER_PD_MODE=nixl; the fault test kills a
rank, so it runs last."""

from __future__ import annotations

import time

import pytest

from pd_cluster import (check_a_repeated_prefix_hits_on_any_prefill_rank, completion,
                        decode_leg, delta, deployment, prefill_leg, words)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from deployment(tmp_path_factory, "nixl", decode_dp=1)


def test_pd_through_nixl_answers_as_a_single_engine(cluster):
    prompt = words(300)
    direct = cluster.complete(cluster.prefill[0], prompt)["choices"][0]["text"]
    before = cluster.metrics(cluster.decode[0])
    t0 = time.monotonic()
    pd = cluster.complete(cluster.proxy, prompt)["choices"][0]["text"]
    elapsed = time.monotonic() - t0
    after = cluster.metrics(cluster.decode[0])
    assert pd == direct
    # Every prompt token came over NIXL (the partial block too): the decode
    # rank computed none of it.
    assert delta(after, before, "vllm:prompt_tokens_total") == 300
    assert delta(after, before, "vllm:external_prefix_cache_hits_total") == 300, (before, after)
    assert delta(after, before, "vllm:nixl_bytes_transferred_sum") > 0
    assert delta(after, before, "vllm:nixl_num_failed_transfers_total") == 0
    print(f"PD through NIXL: {elapsed:.2f} s for a 300-token prompt")


def test_a_repeated_prefix_hits_on_whichever_prefill_rank_the_proxy_picks(cluster):
    check_a_repeated_prefix_hits_on_any_prefill_rank(cluster)


def test_idle_nixl_ranks_do_not_busy_poll_a_core(cluster):
    # NIXL's progress thread polls without pause in vLLM's own class (a
    # thread at 100% of a core per rank); kvtier's NixlConnector paces it
    # (KVTIER_NIXL_PROGRESS_DELAY_US in the cluster file).
    for port in cluster.prefill + cluster.decode:
        assert cluster.busiest_thread_cores(port) < 0.3, port


def test_a_prefill_rank_killed_after_its_answer_fails_or_recomputes_but_never_hangs(cluster):
    prompt = words(300, start=5000)
    status, answer = cluster.post(cluster.prefill[1], prefill_leg(prompt))
    assert status == 200, answer
    assert answer.get("kv_transfer_params"), answer  # NIXL's handle of the KV
    cluster.kill(cluster.prefill[1])
    t0 = time.monotonic()
    status, pd = cluster.post(cluster.decode[0], decode_leg(prompt, 8, answer), timeout=300)
    elapsed = time.monotonic() - t0
    assert elapsed < 120, elapsed
    if status == 200:  # recomputed: the same text as a from-scratch run
        status_ref, ref = cluster.post(cluster.prefill[0],
                                       completion(prompt, 8, cache_salt="reference"))
        assert status_ref == 200, ref
        assert pd["choices"][0]["text"] == ref["choices"][0]["text"]
    else:  # failed, with an error the client can read
        assert status >= 400 and pd.get("error"), (status, pd)
    print(f"decode leg after its prefill rank died: HTTP {status} in {elapsed:.1f} s")
    # The deployment keeps serving through the surviving prefill rank.
    for i in range(3):
        cluster.complete(cluster.proxy, words(200, start=6000 + 300 * i))
