"""bench/pd_bench.py's cluster files, checked by kvtier-launch's own validation
(--dry-run): each P->D mode on each core layout, with no engine started."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import pd_bench  # noqa: E402
import seed_scenarios as sc  # noqa: E402

LAUNCH = REPO / "build" / "tools" / "kvtier-launch"


def engines(tmp_path: Path, mode: str, cores: str) -> dict[str, dict]:
    """label -> the engine services kvtier-launch would start."""
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(pd_bench.cluster_config(tmp_path, mode, cores)))
    r = subprocess.run([str(LAUNCH), "--cluster", str(path), "--dry-run", "--no-port-check"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return {svc["label"]: svc for stage in json.loads(r.stdout)["stages"] for svc in stage
            if svc["label"] != "proxy"}


@pytest.mark.skipif(not LAUNCH.exists(), reason="build/tools/kvtier-launch not built")
@pytest.mark.parametrize("mode", ["store", "nixl"])
def test_both_roles_run_the_mode_and_the_default_layout_isolates_decode(tmp_path, mode):
    svcs = engines(tmp_path, mode, "decode-isolated")
    assert sorted(svcs) == ["decode-dp0", "prefill-dp0", "prefill-dp1"]
    binds = {k: v["env"]["VLLM_CPU_OMP_THREADS_BIND"] for k, v in svcs.items()}
    # The single engine computes on core 0 (pd_bench.start_single): so do the
    # prefill ranks, and the decode rank has the other core.
    assert binds == {"prefill-dp0": "0", "prefill-dp1": "0", "decode-dp0": "1"}
    for svc in svcs.values():
        assert svc["env"]["KVTIER_PD_MODE"] == mode
        assert svc["env"].get("KVTIER_NIXL_BUFFER_DEVICE") == ("cpu" if mode == "nixl" else None)


@pytest.mark.skipif(not LAUNCH.exists(), reason="build/tools/kvtier-launch not built")
def test_the_shared_layout_is_the_base_files(tmp_path):
    binds = {k: v["env"]["VLLM_CPU_OMP_THREADS_BIND"]
             for k, v in engines(tmp_path, "store", "shared").items()}
    assert binds == {"prefill-dp0": "0", "prefill-dp1": "1", "decode-dp0": "0"}


def test_an_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown core layout 'x'"):
        pd_bench.cluster_config(tmp_path, "store", "x")
    assert "decode-isolated" in sc.CORE_LAYOUTS
