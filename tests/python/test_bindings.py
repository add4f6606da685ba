"""The kvtier Python package: config parsing, hashing and the store by address."""

import ctypes

import pytest

import kvtier

SEED_YAML = """
ucm_connectors:
  - ucm_connector_name: "UcmPipelineStore"
    ucm_connector_config:
      store_pipeline: "Cache|Posix"
      storage_backends: "{root}"
      cache_buffer_capacity_gb: 64
enable_event_sync: true
use_layerwise: true
"""


def test_seed_yaml_parses_unchanged(tmp_path):
    (tmp_path / "ucm.yaml").write_text(SEED_YAML.format(root=tmp_path))
    cfg = kvtier.load_config(str(tmp_path / "ucm.yaml"))
    assert cfg.pipeline == ["Cache", "Posix"]
    assert cfg.storage_backends == [str(tmp_path)]
    assert cfg.cache_capacity_bytes == 64 << 30
    assert cfg.use_layerwise and cfg.enable_event_sync


def test_bad_key_names_the_key(tmp_path):
    with pytest.raises(kvtier.KvtierError, match="bogus"):
        kvtier.parse_config(SEED_YAML.format(root=tmp_path) + "bogus: 1\n")


def test_config_from_dict_matches_yaml(tmp_path):
    d = {"ucm_connectors": [{"ucm_connector_name": "UcmPipelineStore",
                             "ucm_connector_config": {"store_pipeline": "Posix",
                                                      "storage_backends": str(tmp_path)}}]}
    assert kvtier.config_from_dict(d).pipeline == ["Posix"]


def test_block_hasher_is_chained_and_stable():
    h = kvtier.BlockHasher("model-a")
    ids = h.hash_prefix(list(range(40)), 16)
    assert len(ids) == 2 and all(len(i) == 16 for i in ids)  # trailing 8 tokens: no id
    assert ids[0] == kvtier.BlockHasher.hash_block(h.root, list(range(16)))
    assert ids[1] == kvtier.BlockHasher.hash_block(ids[0], list(range(16, 32)))
    assert kvtier.BlockHasher("model-b").hash_prefix(list(range(40)), 16)[0] != ids[0]
    # Same tokens after a different first block: different id (prefix semantics).
    other = h.hash_prefix([99] + list(range(1, 40)), 16)
    assert other[1] != ids[1]


def test_store_dump_load_by_address(tmp_path):
    cfg = kvtier.parse_config(SEED_YAML.format(root=tmp_path))
    ids = kvtier.BlockHasher("ns").hash_prefix(list(range(64)), 16)
    src = (ctypes.c_char * 256)(*range(256))
    with kvtier.Store(cfg, kvtier.BlockLayout(1, 128)) as store:
        # Block i = two segments of src (a "K" and a "V" half).
        task = store.dump_blocks(ids[:2], [0, 1], 0, [ctypes.addressof(src)] * 2, [64, 64],
                                 [64, 64])
        assert store.wait(task, 10).ok
        store.flush(10)
        assert store.lookup(ids) == [True, True, False, False]
        assert store.lookup_prefix(ids) == 2
        dst = (ctypes.c_char * 128)()
        res = store.wait(store.load([(ids[1], 0, [(ctypes.addressof(dst), 128)])]), 10)
        assert res.ok and bytes(dst) == bytes(src)[64:128] * 2
        res = store.wait(store.load([(ids[3], 0, [(ctypes.addressof(dst), 128)])]), 10)
        assert not res.ok and res.failed_blocks == [ids[3]]
        assert store.stats()["dump_tasks"] == 1
    # Another process's view: a lookup-only store sees the Posix tier.
    with kvtier.Store(cfg) as lookup_only:
        assert lookup_only.lookup_prefix(ids) == 2


def test_cancel_forgets_the_task(tmp_path):
    cfg = kvtier.parse_config(SEED_YAML.format(root=tmp_path))
    ids = kvtier.BlockHasher("ns").hash_prefix(list(range(32)), 16)
    src = (ctypes.c_char * 128)(*range(128))
    dst = (ctypes.c_char * 128)()
    with kvtier.Store(cfg, kvtier.BlockLayout(1, 128)) as store:
        assert store.wait(store.dump([(ids[0], 0, [(ctypes.addressof(src), 128)])]), 10).ok
        task = store.load([(ids[0], 0, [(ctypes.addressof(dst), 128)])])
        assert store.cancel(task) is None
        # Once cancel returned the task is gone, whether or not it had finished.
        with pytest.raises(kvtier.KvtierError, match="NotFound"):
            store.wait(task, 1)
        with pytest.raises(kvtier.KvtierError, match="NotFound"):
            store.cancel(task)
        assert store.stats()["cancelled_tasks"] == 1


# Lookups and waits in other threads (the GIL released) while the main
# thread closes the store. In a subprocess: destroying the store under a
# running call crashes the interpreter rather than failing an assertion.
CLOSE_RACE = """
import ctypes, sys, threading
import kvtier
cfg = kvtier.StoreConfig()
cfg.pipeline = ["Posix"]
cfg.storage_backends = [sys.argv[1]]
ids = kvtier.BlockHasher("ns").hash_prefix(list(range(2000 * 4)), 4)
buf = (ctypes.c_char * 64)(*range(64))
errors = []
for _ in range(15):
    store = kvtier.Store(cfg, kvtier.BlockLayout(1, 64))
    assert store.wait(store.dump([(ids[0], 0, [(ctypes.addressof(buf), 64)])]), 10).ok
    expected = [True] + [False] * (len(ids) - 1)
    running = threading.Semaphore(0)

    def worker():
        try:
            first = True
            while True:
                if store.lookup(ids) != expected:
                    errors.append("wrong lookup answer")
                store.wait(store.dump([(ids[0], 0, [(ctypes.addressof(buf), 64)])]), 10)
                if first:  # from now on this thread is mostly inside a call
                    running.release()
                    first = False
        except ValueError as e:
            if "closed" not in str(e):
                errors.append(repr(e))
        except Exception as e:  # anything else is a bug
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        running.acquire()
    store.close()
    for t in threads:
        t.join()
    with_closed = False
    try:
        store.lookup(ids)
    except ValueError as e:
        with_closed = "closed" in str(e)
    if not with_closed:
        errors.append("a call after close did not raise ValueError('store is closed')")
print("errors:", errors)
sys.exit(1 if errors else 0)
"""


def test_close_waits_for_calls_in_other_threads(tmp_path):
    import os
    import subprocess
    import sys
    # The child imports the kvtier this interpreter imported.
    args = [sys.executable] + (["-S"] if sys.flags.no_site else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run(args + ["-c", CLOSE_RACE, str(tmp_path)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
