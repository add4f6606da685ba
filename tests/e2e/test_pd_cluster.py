"""End to end: the seed's PD deployment scaled down, brought up by
`kvtier-launch --cluster deploy/seed/cluster_one_machine.yaml`: prefill DP2
(UCMConnector kv_both) + decode DP2 (kv_consumer) behind kvtier-proxy, P->D
through the shared store. One deployment serves every test in this module;
the fault tests kill ranks, so they run last, in file order."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from pd_cluster import (BLOCK, Cluster, check_a_repeated_prefix_hits_on_any_prefill_rank,
                        completion, decode_leg, delta, deployment, prefill_leg, words)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from deployment(tmp_path_factory, "store", decode_dp=2)


def decode_totals(cluster: Cluster) -> dict[str, float]:
    total: dict[str, float] = {}
    for port in cluster.decode:
        for k, v in cluster.metrics(port).items():
            total[k] = total.get(k, 0.0) + v
    return total


def test_pd_through_the_store_answers_as_a_single_engine(cluster):
    prompt = words(300)
    direct = cluster.complete(cluster.prefill[0], prompt)["choices"][0]["text"]
    before = decode_totals(cluster)
    pd = cluster.complete(cluster.proxy, prompt)["choices"][0]["text"]
    after = decode_totals(cluster)
    # The same prompt through P->D gives the same greedy text as one engine.
    assert pd == direct
    # The decode leg computed at most one block of the 300-token prompt: the
    # rest came from the store (vLLM's own counters on the decode ranks).
    prompt_tokens = delta(after, before, "vllm:prompt_tokens_total")
    external = delta(after, before, "vllm:external_prefix_cache_hits_total")
    local = delta(after, before, "vllm:prefix_cache_hits_total")
    assert prompt_tokens == 300, (before, after)
    assert prompt_tokens - external - local <= BLOCK, (prompt_tokens, external, local)
    assert external >= 300 // BLOCK * BLOCK - BLOCK, external


def test_a_repeated_prefix_hits_on_whichever_prefill_rank_the_proxy_picks(cluster):
    check_a_repeated_prefix_hits_on_any_prefill_rank(cluster)


def test_a_prefill_rank_killed_after_its_answer_loses_nothing(cluster):
    """The KV is in the shared store once the prefill rank has answered: the
    decode rank decodes after the prefill rank is gone."""
    prompt = words(300, start=5000)
    status, answer = cluster.post(cluster.prefill[1], prefill_leg(prompt))
    assert status == 200, answer
    cluster.kill(cluster.prefill[1])
    before = cluster.metrics(cluster.decode[0])
    status, pd = cluster.post(cluster.decode[0], decode_leg(prompt, 8, answer), timeout=300)
    after = cluster.metrics(cluster.decode[0])
    assert status == 200, pd
    assert delta(after, before, "vllm:external_prefix_cache_hits_total") >= 2 * BLOCK
    # The same text as a from-scratch computation (another cache_salt misses
    # both vLLM's cache and kvtier's).
    ref_body = completion(prompt, 8, cache_salt="reference")
    b = cluster.metrics(cluster.prefill[0])
    status, ref = cluster.post(cluster.prefill[0], ref_body)
    a = cluster.metrics(cluster.prefill[0])
    assert status == 200, ref
    assert delta(a, b, "vllm:external_prefix_cache_hits_total") == 0
    assert delta(a, b, "vllm:prefix_cache_hits_total") == 0
    assert pd["choices"][0]["text"] == ref["choices"][0]["text"]
    # The proxy no longer sends prefill legs to the dead rank.
    for i in range(3):
        cluster.complete(cluster.proxy, words(200, start=6000 + 300 * i))


def running(cluster: Cluster, port: int) -> float:
    return cluster.metrics(port).get("vllm:num_requests_running", 0.0)


def test_a_decode_rank_killed_mid_stream_fails_that_stream_and_not_the_next(cluster):
    conn = http.client.HTTPConnection("127.0.0.1", cluster.proxy, timeout=120)
    body = completion(words(200, start=7000), 2000, stream=True)
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.readline()  # (de-chunked)
    assert first.startswith(b"data: "), first
    serving = [p for p in cluster.decode if running(cluster, p) > 0]
    assert len(serving) == 1, serving
    cluster.kill(serving[0])
    # The stream ends (no hang) without the [DONE] of a completed answer.
    t0 = time.monotonic()
    rest = b""
    try:
        while chunk := resp.read1(65536):
            rest += chunk
    except (http.client.IncompleteRead, ConnectionError) as e:
        rest += getattr(e, "partial", b"") or b""
    assert time.monotonic() - t0 < 120
    assert b"data: [DONE]" not in rest, rest[-500:]
    conn.close()
    # New requests go to the decode rank still alive.
    alive = next(p for p in cluster.decode if p != serving[0])
    before = cluster.metrics(alive)
    for i in range(2):
        cluster.complete(cluster.proxy, words(150, start=9000 + 200 * i))
    after = cluster.metrics(alive)
    assert delta(after, before, "vllm:request_success_total") == 2
