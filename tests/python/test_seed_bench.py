"""bench/seed_bench.py's parts that need no engine: each scenario's cluster
file (checked by kvtier-launch's own validation), the hit rates, table and
checks on synthetic results, the Prometheus parsing and the progress lines."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import seed_bench  # noqa: E402
import seed_scenarios as sc  # noqa: E402
import seed_table  # noqa: E402

LAUNCH = REPO / "build" / "tools" / "kvtier-launch"


def plan(tmp_path: Path, scenario: sc.Scenario) -> dict:
    """The scenario's cluster file through `kvtier-launch --dry-run`."""
    import yaml
    cfg = sc.cluster_config(scenario, tmp_path / scenario.name, sc.Ports.from_base(21000),
                            "/venv/bin/python")
    path = tmp_path / f"{scenario.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([str(LAUNCH), "--cluster", str(path), "--dry-run", "--no-port-check"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.skipif(not LAUNCH.exists(), reason="build/tools/kvtier-launch not built")
@pytest.mark.parametrize("name", list(sc.SCENARIOS))
def test_each_scenario_is_a_valid_cluster_that_differs_only_on_the_prefill_side(tmp_path, name):
    s = sc.SCENARIOS[name]
    services = {svc["label"]: svc for stage in plan(tmp_path, s)["stages"] for svc in stage}
    assert sorted(services) == ["decode-dp0", "prefill-dp0", "prefill-dp1", "proxy"]
    for label in ("prefill-dp0", "prefill-dp1"):
        env = services[label]["env"]
        assert env["KVTIER_PREFILL_ROLE"] == s.prefill_role
        assert ("--no-enable-prefix-caching" in env["KVTIER_ENGINE_ARGS"]) == \
            (not s.prefix_caching)
        assert "--served-model-name tiny" in env["KVTIER_ENGINE_ARGS"]
    # Every rank runs at most the seed's 4 requests at once (its prefill.sh, decode.sh).
    for svc in services.values():
        if svc["label"] != "proxy":
            assert "--max-num-seqs 4" in svc["env"]["KVTIER_ENGINE_ARGS"]
    assert [services[f"prefill-dp{i}"]["port"] for i in (0, 1)] == [21000, 21001]
    # The decode side and the P->D path are the same in every scenario.
    decode = services["decode-dp0"]["env"]
    assert "KVTIER_PREFILL_ROLE" not in decode
    assert "--no-enable-prefix-caching" not in decode["KVTIER_ENGINE_ARGS"]
    assert decode["KVTIER_PD_MODE"] == "store"
    proxy = services["proxy"]["command"]
    assert proxy.endswith("--decoder-ports 21004" + (" --routing prefix" if s.routing else ""))
    assert services["proxy"]["port"] == 21006


@pytest.mark.skipif(not LAUNCH.exists(), reason="build/tools/kvtier-launch not built")
def test_the_default_core_layout_gives_the_decode_rank_a_core_of_its_own(tmp_path):
    services = {svc["label"]: svc for stage in plan(tmp_path, sc.SCENARIOS["kvtier"])["stages"]
                for svc in stage}
    binds = {k: services[k]["env"]["VLLM_CPU_OMP_THREADS_BIND"]
             for k in ("prefill-dp0", "prefill-dp1", "decode-dp0")}
    assert binds == {"prefill-dp0": "0", "prefill-dp1": "0", "decode-dp0": "1"}
    shared = sc.cluster_config(sc.SCENARIOS["kvtier"], tmp_path, sc.Ports.from_base(21000), "py",
                               cores="shared")
    assert shared["prefill"]["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "{device_list_bar}"
    with pytest.raises(ValueError, match="unknown core layout 'x'"):
        sc.cluster_config(sc.SCENARIOS["kvtier"], tmp_path, sc.Ports.from_base(21000), "py",
                          cores="x")
    with pytest.raises(SystemExit):
        seed_bench.parse_args(["--cores", "x"])


def test_engine_env_goes_to_both_roles_and_nothing_else_changes(tmp_path):
    ports = sc.Ports.from_base(21000)
    plain = sc.cluster_config(sc.SCENARIOS["kvtier"], tmp_path, ports, "py")
    extra = sc.cluster_config(sc.SCENARIOS["kvtier"], tmp_path, ports, "py", {"A": "1"})
    for role in ("prefill", "decode"):
        assert extra[role]["env"] == dict(plain[role]["env"], A="1")
    assert {k: v for k, v in extra.items() if k not in ("prefill", "decode")} == \
        {k: v for k, v in plain.items() if k not in ("prefill", "decode")}
    with pytest.raises(SystemExit):
        seed_bench.parse_args(["--engine-env", "novalue"])
    assert seed_bench.parse_args(["--engine-env", "X=a=b"]).engine_env_map == {"X": "a=b"}


def test_the_connector_roles_are_what_the_baselines_need():
    # kv_producer never loads (the connector's do_load is is_kv_consumer).
    assert sc.SCENARIOS["recalc"].prefill_role == "kv_producer"
    assert sc.SCENARIOS["hbm"].prefill_role == "kv_producer"
    assert sc.SCENARIOS["kvtier"].prefill_role == "kv_both"
    assert [s.name for s in sc.parse_scenarios("hbm, kvtier")] == ["hbm", "kvtier"]
    with pytest.raises(ValueError, match="unknown scenario"):
        sc.parse_scenarios("hbm,nope")


def rank(hits: float, ext: float, queries: float, ext_queries: float | None = None,
         requests: int = 8) -> dict:
    return {"port": 0, "delta": {
        "vllm:prefix_cache_queries": queries, "vllm:prefix_cache_hits": hits,
        "vllm:external_prefix_cache_queries": queries if ext_queries is None else ext_queries,
        "vllm:external_prefix_cache_hits": ext, "vllm:request_success": requests}}


def run(ttft: float, tpot: float, ranks: list[dict]) -> dict:
    serve = {"completed": 16, "failed": 0}
    for m, v in (("ttft", ttft), ("tpot", tpot), ("e2el", ttft + 15 * tpot)):
        for stat, f in (("mean", 1.0), ("median", 0.9), ("p99", 1.5)):
            serve[f"{stat}_{m}_ms"] = v * f
    return {"serve": serve, "ranks": ranks, "store": {"blocks": 96}, "wall_s": 200.0}


Q = 8 * 1024  # 8 requests of 1024 tokens per rank


def results(hbm_ttft=300.0, kvtier_tpot=20.2, kvtier_rank1_ext=768 * 4,
            routing_ttft=140.0) -> dict:
    seeded = 768 * 8  # 6 whole blocks of the 819 pre-seeded tokens, 8 requests
    return {"settings": {"num_prompts": 16, "output_len": 16, "prefix_ratio": 0.8,
                         "block_size": 128, "input_lens": [1024], "scale_note": "tiny"},
            "runs": {
                "recalc": {"1024": run(500, 20, [rank(0, 0, 0, Q), rank(0, 0, 0, Q)])},
                "hbm": {"1024": run(hbm_ttft, 20, [rank(seeded / 2, 0, Q),
                                                   rank(seeded / 4, 0, Q)])},
                "kvtier": {"1024": run(150, kvtier_tpot, [
                    rank(seeded / 2, seeded / 2, Q), rank(seeded / 2, kvtier_rank1_ext, Q)])},
                "hbm-routing": {"1024": run(160, 20, [rank(seeded, 0, Q), rank(seeded, 0, Q)])},
                "kvtier-routing": {"1024": run(routing_ttft, 20, [rank(seeded, 0, Q),
                                                                  rank(seeded, 0, Q)])},
            }}


def test_hit_rates_sum_vllms_and_kvtiers_hits_over_queries():
    table = seed_table.build_table(results())
    hbm = seed_table.cell(table["rows"], "hbm", 1024)
    assert hbm["hit_rate"] == pytest.approx((768 * 4 + 768 * 2) / (2 * Q))
    assert hbm["rank_hit_rates"] == pytest.approx([0.375, 0.1875])
    kv = seed_table.cell(table["rows"], "kvtier", 1024)
    assert kv["rank_hit_rates"] == pytest.approx([0.75, 0.75])
    # Prefix caching off: only the connector's queries are counted.
    recalc = seed_table.cell(table["rows"], "recalc", 1024)
    assert recalc["hit_rate"] == 0.0
    assert seed_table.hit_rate({}) is None
    assert seed_table.seeded_rate(1024, 0.8, 128) == 0.75
    assert seed_table.seeded_rate(3072, 0.8, 128) == 2432 / 3072


def test_the_expected_results_pass_every_check():
    out = seed_table.check(seed_table.build_table(results()))
    assert all(ok for ok, _ in out), out
    assert len(out) == 7  # HBM rate, kvtier rate, recalc, HBM external, TTFT order, TPOT, routing


@pytest.mark.parametrize("change, failing", [
    ({"hbm_ttft": 120.0}, "TTFT Recalculation"),           # HBM faster than kvtier
    ({"kvtier_tpot": 21.0}, "kvtier PC TPOT"),              # 5% slower decode
    ({"kvtier_rank1_ext": 768 * 2}, "kvtier PC hit rate"),  # rank 1 misses blocks
    ({"routing_ttft": 170.0}, "kvtier PC + routing"),       # worse than kvtier alone
])
def test_each_check_fails_when_its_expectation_does_not_hold(change, failing):
    out = seed_table.check(seed_table.build_table(results(**change)))
    failed = [line for ok, line in out if not ok]
    assert len(failed) == 1 and failing in failed[0], out


@pytest.mark.parametrize("tpot, ok", [(19.5, True), (20.5, True), (19.0, False), (21.0, False)])
def test_the_tpot_check_is_within_3_percent_either_way(tpot, ok):
    # HBM PC decodes at 20.0 ms: 19.5 and 20.5 are within 3%, 19.0 and 21.0
    # (5% faster, 5% slower) are not.
    out = seed_table.check(seed_table.build_table(results(kvtier_tpot=tpot)))
    line = next(line for _, line in out if "kvtier PC TPOT" in line)
    assert all(o for o, _ in out) == ok, out
    assert f"TPOT {tpot:.2f} ms within 3% of HBM PC's 20.00" in line


def test_hbm_hitting_everything_it_seeded_fails_the_spread_check():
    res = results()
    res["runs"]["hbm"]["1024"] = run(300, 20, [rank(768 * 8, 0, Q), rank(768 * 8, 0, Q)])
    failed = [line for ok, line in seed_table.check(seed_table.build_table(res)) if not ok]
    assert len(failed) == 1 and failed[0].startswith("1024: HBM PC hit rate 0.750 < 0.750")


def test_checks_of_scenarios_that_did_not_run_are_left_out():
    res = results()
    for name in ("recalc", "hbm-routing", "kvtier-routing"):
        del res["runs"][name]
    lines = [line for _, line in seed_table.check(seed_table.build_table(res))]
    assert not any("Recalculation" in x or "routing" in x for x in lines), lines
    assert any("TPOT" in x for x in lines)


def test_table_json_markdown_and_charts(tmp_path):
    table = seed_table.build_table(results())
    checks = seed_table.check(table)
    paths = seed_table.write(table, checks, "make demo", tmp_path)
    md = paths["md"].read_text()
    assert "Made by: `make demo`" in md
    header = next(x for x in md.splitlines() if x.startswith("| Input | Output |"))
    assert header.count("TTFT") == 5 and "Recalculation TTFT" in header
    row = next(x for x in md.splitlines() if x.startswith("| 1024 | 16 |"))
    assert row.split(" | ")[2:5] == ["500", "20.0", "800"]  # Recalculation TTFT/TPOT/E2EL
    assert "| seed 32K | 2.10 | 2.71 |" in md
    assert "| ours 1024 | 2.00 | 3.33 |" in md
    assert "- PASS: 1024: TTFT Recalculation 500 > HBM PC 300 > kvtier PC 150 ms" in md
    doc = json.loads(paths["json"].read_text())
    assert doc["command"] == "make demo" and all(c["passed"] for c in doc["checks"])
    assert doc["ratios"]["1024"]["hbm_over_kvtier_ttft"] == pytest.approx(2.0)
    assert doc["rows"][1]["rank_counters"][0]["vllm:prefix_cache_hits"] == 768 * 4
    for png in (paths["ttft_png"], paths["hit_png"]):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_work_pair_gives_the_run_to_run_spread():
    table = seed_table.build_table(results())  # routing: 160 (HBM PC) against 140 ms
    spread = table["same_work"]["1024"]
    assert spread["ttft"] == pytest.approx(20 / 140) and spread["tpot"] == 0.0
    md = seed_table.markdown(table, None, "x")
    assert "## Run-to-run spread" in md and "| 1024 | 14.3% | 0.0% |" in md
    res = results()  # kvtier PC + routing loaded from the store: not the same work
    res["runs"]["kvtier-routing"]["1024"]["ranks"][0]["delta"][
        "vllm:external_prefix_cache_hits"] = 768
    table = seed_table.build_table(res)
    assert table["same_work"] == {}
    assert "Run-to-run spread" not in seed_table.markdown(table, None, "x")


def test_the_decode_ranks_batch_and_loads_are_reported_per_scenario(tmp_path):
    res = results()
    kv = res["runs"]["kvtier"]["1024"]
    kv["serve"]["decode_running"] = [2.0, 4.0, 9.0]
    kv["decode_ranks"] = [{"port": 0, "delta": {
        "vllm:kvtier_load_time_seconds_sum": 0.32, "vllm:kvtier_load_stall_seconds_sum": 0.0}}]
    kv["proxy"] = [{"port": 1, "delta": {  # 16 prefill legs of 0.1 s: 100 of the 150 ms TTFT
        "kvtier_proxy_prefill_duration_seconds_sum": 1.6,
        "kvtier_proxy_prefill_duration_seconds_count": 16}}]
    table = seed_table.build_table(res)
    row = seed_table.cell(table["rows"], "kvtier", 1024)
    assert row["decode_batch_mean"] == pytest.approx(5.0) and row["decode_batch_max"] == 9.0
    assert row["decode_load_ms_per_req"] == pytest.approx(20.0)  # 0.32 s over 16 requests
    assert row["decode_stall_ms_per_req"] == 0.0
    assert row["prefill_leg_ms"] == pytest.approx(100.0)
    assert row["decode_leg_ms"] == pytest.approx(50.0)
    hbm = seed_table.cell(table["rows"], "hbm", 1024)  # a run without samples: no numbers
    assert hbm["decode_batch_mean"] is None and hbm["decode_load_ms_per_req"] == 0.0
    assert hbm["prefill_leg_ms"] is None and hbm["decode_leg_ms"] is None
    md = seed_table.markdown(table, None, "x")
    assert "| 1024 | kvtier PC | 100 | 50.0 | 20.2 | 5.0 | 9.0 | 20.0 | 0.0 |" in md
    assert "| 1024 | HBM PC | - | - | 20.0 | - | - | 0.0 | 0.0 |" in md


def test_prometheus_counters_are_summed_over_labels():
    text = "\n".join([
        "# HELP vllm:prefix_cache_hits_total Prefix cache hits",
        "# TYPE vllm:prefix_cache_hits_total counter",
        'vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 768.0',
        'vllm:prefix_cache_hits_total{engine="1",model_name="tiny"} 256.0',
        'vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 2048.0',
        'vllm:prefix_cache_queries_created{engine="0",model_name="tiny"} 1.7e9',
        'vllm:request_success_total{finished_reason="length",model_name="tiny"} 3.0',
        'vllm:request_success_total{finished_reason="stop",model_name="tiny"} 1.0',
        'kvtier_load_bytes_total{rank="0"} 1e6',
        "vllm:num_requests_running 2.0",
    ])
    assert seed_bench.parse_metrics(text) == {
        "vllm:prefix_cache_hits": 1024.0, "vllm:prefix_cache_queries": 2048.0,
        "vllm:request_success": 4.0, "kvtier_load_bytes_total": 1e6,
        "vllm:num_requests_running": 2.0}


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_in_a_log_is_one_line_per_phase_without_carriage_returns():
    out, clock = io.StringIO(), FakeClock()
    p = seed_bench.Progress(out, heartbeat_s=60, clock=clock)
    p.begin("kvtier PC 1024", "test")
    for i in range(10):
        clock.t += 5
        p.update(i, 16)  # 50 s: under the heartbeat, nothing printed yet
    assert out.getvalue() == ""
    clock.t += 20
    p.update(12, 16)  # past 60 s: one heartbeat line
    p.end(16, 16, "mean TTFT 150 ms")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()
    assert lines == [
        seed_bench.Progress.line("kvtier PC 1024", "test", 12, 16, 70.0),
        seed_bench.Progress.line("kvtier PC 1024", "test", 16, 16, 70.0) + "  mean TTFT 150 ms"]
    assert lines[1].split() == ["seed-bench", "kvtier", "PC", "1024", "test", "16/16",
                                "requests", "70.0", "s", "mean", "TTFT", "150", "ms"]


def test_progress_on_a_terminal_redraws_one_line():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out, clock = Tty(), FakeClock()
    p = seed_bench.Progress(out, clock=clock)
    p.begin("HBM PC 1024", "start", "services")
    p.update(1, 4)
    clock.t = 3
    p.update(3, 4)
    p.end(4, 4)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 3
    assert text.endswith(seed_bench.Progress.line("HBM PC 1024", "start", 4, 4, 3.0,
                                                  "services") + "\033[K\n")


def test_the_readme_section_gets_the_table_and_the_charts(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n" + seed_table.README_BEGIN + "\nold\n" +
                      seed_table.README_END + "\nafter\n")
    table = seed_table.build_table(results())
    checks = seed_table.check(table)
    seed_table.update_readme(readme, table, checks, "make bench-seed", tmp_path / "bench/results")
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n" + seed_table.README_BEGIN)
    assert text.endswith(seed_table.README_END + "\nafter\n") and "old" not in text
    assert "Made by `make bench-seed`" in text
    assert "| 1024 | 16 | 500 | 20.0 | 800 |" in text
    assert "Checks: 7 of 7 passed" in text
    assert "![TTFT](bench/results/seed_ttft.png)" in text
    other = tmp_path / "OTHER.md"
    other.write_text("no markers")
    with pytest.raises(ValueError, match="seed-table"):
        seed_table.update_readme(other, table, checks, "x", tmp_path)


def test_a_routing_scenario_fails_plainly_on_a_proxy_without_routing(tmp_path):
    (tmp_path / "tools").mkdir()
    proxy = tmp_path / "tools" / "kvtier-proxy"
    proxy.write_text("#!/bin/sh\necho 'Options: --port --prefiller-hosts'\n")
    proxy.chmod(0o755)
    args = seed_bench.parse_args(["--build", str(tmp_path), "--run-dir", str(tmp_path / "runs")])
    assert not seed_bench.proxy_has_routing(proxy)
    with pytest.raises(seed_bench.RunFailed, match="has no --routing flag"):
        seed_bench.run_one(args, sc.SCENARIOS["kvtier-routing"], 1024,
                           seed_bench.Progress(io.StringIO()))
    assert not (tmp_path / "runs").exists()  # nothing was started
    proxy.write_text("#!/bin/sh\necho '  --routing TEXT  round-robin or prefix'\n")
    assert seed_bench.proxy_has_routing(proxy)


def test_a_venv_without_the_kvtier_package_is_refused_before_anything_starts(tmp_path, capsys):
    python = tmp_path / "python"  # a Python whose `import kvtier._kvtier` fails
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    assert seed_bench.has_kvtier_package(Path(sys.executable))  # the venv running these tests
    assert not seed_bench.has_kvtier_package(python)
    rc = seed_bench.main(["--python", str(python), "--run-dir", str(tmp_path / "runs"),
                          "--out-dir", str(tmp_path / "out")])
    assert rc == 2
    assert "make python-ext" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()
