"""A load or save that outlives kvtier_task_timeout_s is cancelled (issue 8
item 4): once the connector moves on, the store never touches those KV blocks
again. The hung filesystem is a real one for the purpose: a block file
replaced by a FIFO, whose open() blocks in the kernel until a writer comes."""

import os
import threading
import time
from pathlib import Path

import pytest
import torch

import kvtier
from kvtier.integration.vllm import UCMConnectorMetadata
from vllm_harness import LAYERS, Worker, kv_cache_config, ucm_settings, vllm_config

NUM_BLOCKS = 16


def ids(n, salt=b""):
    return kvtier.BlockHasher(b"timeout-test" + salt).hash_prefix(list(range(16 * n)), 16)


def settings(root: Path, layerwise: bool, **extra):
    s = ucm_settings(root, layerwise=layerwise)
    s.update(extra)
    return s


@pytest.mark.parametrize("layerwise", [False, True], ids=["whole-block", "layerwise"])
def test_hung_load_is_cancelled_and_never_writes_afterwards(model_dir, tmp_path, layerwise):
    root = tmp_path / "store"
    cfg = vllm_config(model_dir, settings(root, layerwise))
    kcc = kv_cache_config(cfg, NUM_BLOCKS)
    src = Worker(cfg, kcc, seed=1)
    block_ids = ids(3)
    assert not src.step(UCMConnectorMetadata(save_ids=block_ids, save_blocks=[1, 2, 3]))
    files = sorted(root.rglob("*.kvb"))
    units = cfg.model_config.get_total_num_kv_heads()  # a file per head unit and block
    assert len(files) == 3 * units
    healthy_ids = ids(2, b"healthy")
    assert not src.step(UCMConnectorMetadata(save_ids=healthy_ids, save_blocks=[7, 8]))
    # Every file of the blocks becomes a FIFO: any load of them hangs in open().
    for f in files:
        f.unlink()
        os.mkfifo(f)

    dst_cfg = vllm_config(model_dir, settings(root, layerwise, kvtier_task_timeout_s=0.5))
    dst = Worker(dst_cfg, kv_cache_config(dst_cfg, NUM_BLOCKS), seed=2)
    t0 = time.monotonic()
    errors = dst.step(UCMConnectorMetadata(load_ids=block_ids, load_blocks=[4, 5, 6]))
    elapsed = time.monotonic() - t0
    assert errors == {4, 5, 6}  # recomputed by vLLM
    stats = dst.connector.get_kv_connector_stats().reduce()
    # One task per head unit (and layer): each is cancelled.
    assert stats["kvtier_cancelled_tasks"] == units * (len(LAYERS) if layerwise else 1)
    assert elapsed < 30, elapsed  # cancelled, not waited out

    # The store's I/O threads are free again: without the cancel they would
    # still sit in open() and this load would time out as well.
    assert dst.step(UCMConnectorMetadata(load_ids=healthy_ids, load_blocks=[9, 10])) == set()
    for n in LAYERS:
        assert torch.equal(dst.caches[n][9], src.caches[n][7])
        assert torch.equal(dst.caches[n][10], src.caches[n][8])
    assert dst.connector.store_stats()["cancelled_tasks"] == stats["kvtier_cancelled_tasks"]

    # Now the "filesystem" comes back: writers open the FIFOs and send bytes.
    after_cancel = {n: dst.caches[n].clone() for n in LAYERS}
    stop = threading.Event()

    def feed(path):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # no reader left: nothing can be written into the KV cache
        try:
            while not stop.is_set():
                try:
                    os.write(fd, b"\xab" * 65536)
                except BlockingIOError:
                    time.sleep(0.01)
                except BrokenPipeError:
                    return
        finally:
            os.close(fd)

    feeders = [threading.Thread(target=feed, args=(f,)) for f in files]
    for t in feeders:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in feeders:
        t.join()
    for n in LAYERS:
        assert torch.equal(dst.caches[n], after_cancel[n]), "a cancelled load wrote KV"
    dst.connector.shutdown()
    src.connector.shutdown()


def test_task_timeout_option_is_validated(model_dir, tmp_path):
    from kvtier.integration.vllm import UCMConnector
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
    for bad in (0, -1, "10", True):
        cfg = vllm_config(model_dir, settings(tmp_path, False, kvtier_task_timeout_s=bad))
        with pytest.raises(ValueError, match="kvtier_task_timeout_s"):
            UCMConnector(cfg, KVConnectorRole.WORKER, kv_cache_config(cfg, NUM_BLOCKS))
    cfg = vllm_config(model_dir, settings(tmp_path, False, kvtier_task_timout_s=5))
    with pytest.raises(ValueError, match="unknown connector option.*kvtier_task_timout_s"):
        UCMConnector(cfg, KVConnectorRole.WORKER, kv_cache_config(cfg, NUM_BLOCKS))
