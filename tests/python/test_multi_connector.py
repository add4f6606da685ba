"""UCMConnector inside vLLM's MultiConnector, next to another connector."""

from vllm.distributed.kv_transfer.kv_connector.v1.multi_connector import MultiConnector

from vllm_harness import (Worker, kv_cache_config, multi_connector_config, request, run_step,
                          run_until_done, scheduler, ucm_settings, vllm_config)


def test_inside_multi_connector(model_dir, tmp_path):
    def engine(seed):
        cfg = multi_connector_config(model_dir, tmp_path)
        kcc = kv_cache_config(cfg, 64)
        sched = scheduler(cfg, kcc)
        assert isinstance(sched.connector, MultiConnector)
        # Our worker side alone (as MultiConnector builds it: the child's config),
        # fed its part of the MultiConnector metadata.
        child = vllm_config(model_dir, ucm_settings(tmp_path / "store"))
        return sched, Worker(child, kv_cache_config(child, 64), seed)

    def drive(sched, worker):
        class Sub:  # hands the UCM worker its part of the MultiConnector metadata
            connector = worker.connector

            recving: set[str] = set()

            @classmethod
            def step(cls, meta, work=None, finished_req_ids=frozenset()):
                errors = worker.step(meta.metadata[1], work, finished_req_ids)
                cls.recving = worker.recving
                return errors
        return Sub

    prompt = list(range(10, 110))
    sched_a, worker_a = engine(1)
    sched_a.add_request(request(prompt))
    metas = run_until_done(sched_a, drive(sched_a, worker_a))
    assert sum(len(m.metadata[1].save_ids) for m in metas) == 6

    sched_b, worker_b = engine(2)
    r = request(prompt[:64] + list(range(900, 936)))
    sched_b.add_request(r)
    out, _ = run_step(sched_b, drive(sched_b, worker_b))
    # The Example connector has nothing, so kvtier serves the 4 shared blocks.
    assert len(out.kv_connector_metadata.metadata[1].load_ids) == 4
    run_until_done(sched_b, drive(sched_b, worker_b))
    assert sched_b.connector._connectors[1].num_tracked_requests() == 0
