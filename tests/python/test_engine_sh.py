"""deploy/seed/engine.sh, the seed deployment's rank command: the connector
config it builds per role and P->D mode, and the settings it refuses. Its
KVTIER_PYTHON is replaced by a script that prints the arguments, so what
vLLM would be started with is checked without starting it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# engine.sh's positional arguments: device_list local_ip nic_name server_port
# tp_size dp_size dp_rank dp_address dp_rpc_port kv_port
ARGS = ["0", "127.0.0.1", "lo", "8100", "1", "1", "0", "127.0.0.1", "9000", "8200"]


def run(role: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    python = tmp_path / "python"
    python.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    python.chmod(0o755)
    # Only the settings given here: none of the caller's KVTIER_* leak in.
    full = {k: v for k, v in os.environ.items() if not k.startswith("KVTIER_")}
    full.update(KVTIER_MODEL="/model", KVTIER_UCM_CONFIG="/ucm.yaml",
                KVTIER_PYTHON=str(python), **env)
    return subprocess.run(["sh", str(REPO / "deploy/seed/engine.sh"), role, *ARGS], env=full,
                          capture_output=True, text=True)


def kv_config(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    argv = json.loads(proc.stdout)
    return json.loads(argv[argv.index("--kv-transfer-config") + 1])


def nixl_of(ktc: dict) -> dict:
    if ktc["kv_connector"] == "MultiConnector":
        return next(c for c in ktc["kv_connector_extra_config"]["connectors"]
                    if c["kv_connector"] == "NixlConnector")
    return ktc


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_nixl_mode_with_a_delay_runs_kvtiers_paced_connector(role, tmp_path):
    nixl = nixl_of(kv_config(run(role, tmp_path, KVTIER_PD_MODE="nixl",
                                 KVTIER_NIXL_PROGRESS_DELAY_US="200")))
    assert nixl["kv_connector"] == "NixlConnector"  # vLLM's name, kvtier's class
    assert nixl["kv_connector_module_path"] == "kvtier.integration.vllm.nixl_pacing"
    assert nixl["kv_connector_extra_config"] == {"nixl_progress_delay_us": 200}


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_nixl_mode_without_a_delay_runs_vllms_own_connector(role, tmp_path):
    nixl = nixl_of(kv_config(run(role, tmp_path, KVTIER_PD_MODE="nixl")))
    assert "kv_connector_module_path" not in nixl


@pytest.mark.parametrize("bad", ["abc", "-5", "1.5", "200us"])
def test_a_delay_that_is_not_a_number_of_microseconds_is_refused(bad, tmp_path):
    proc = run("prefill", tmp_path, KVTIER_PD_MODE="nixl", KVTIER_NIXL_PROGRESS_DELAY_US=bad)
    assert proc.returncode == 2
    assert "KVTIER_NIXL_PROGRESS_DELAY_US must be a number of microseconds" in proc.stderr
    assert proc.stdout == ""  # vLLM was never started


def ucm_extra(ktc: dict) -> dict:
    return ktc["kv_connector_extra_config"]


@pytest.mark.parametrize("value", ["true", "false"])
def test_load_async_setting_reaches_the_connector(value, tmp_path):
    for role in ("prefill", "decode"):
        extra = ucm_extra(kv_config(run(role, tmp_path, KVTIER_LOAD_ASYNC=value)))
        assert extra == {"UCM_CONFIG_FILE": "/ucm.yaml", "kvtier_load_async": value == "true"}


def test_load_async_unset_leaves_the_connectors_default(tmp_path):
    assert ucm_extra(kv_config(run("decode", tmp_path))) == {"UCM_CONFIG_FILE": "/ucm.yaml"}


def test_load_async_that_is_not_a_boolean_is_refused(tmp_path):
    proc = run("decode", tmp_path, KVTIER_LOAD_ASYNC="yes")
    assert proc.returncode == 2 and "KVTIER_LOAD_ASYNC must be true or false" in proc.stderr
