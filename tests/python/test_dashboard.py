"""deploy/grafana/kvtier.json queries only series that exist, and
deploy/prometheus.yml scrapes the one-machine cluster's ports.

The exported names come from their sources: the connector's SERIES (also
checked against what vLLM's Prometheus logger registers for it), vLLM's own
from that logger's registry, and kvtier-proxy's from src/proxy's sources."""

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY
from vllm.v1.metrics.loggers import PrometheusStatLogger
from vllm_harness import ucm_settings, vllm_config

from kvtier.integration.vllm.metrics import SERIES, exported_samples

REPO = Path(__file__).resolve().parents[2]
SUFFIXES = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
# Words of PromQL that can stand where a metric name does.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if not m.group(2) and m.group(1).lower() not in KEYWORDS:  # not a function call
            names.add(m.group(1))
    return names


def test_promql_metrics_parser():
    e = ('histogram_quantile(0.99, sum by (le, role) (rate(vllm:x_bucket{tier="a b"}[5m]))) '
         '/ ignoring(tier) group_left sum without (x) (kvtier_proxy_y) > bool 1e9')
    assert promql_metrics(e) == {"vllm:x_bucket", "kvtier_proxy_y"}


def proxy_samples() -> set[str]:
    src = "".join(p.read_text() for p in (REPO / "src" / "proxy").glob("*.cc"))
    found = re.findall(r'"(kvtier_proxy_\w+)",\s*"(counter|gauge|histogram)"', src)
    assert len(found) >= 10, found  # the table in docs/proxy.md
    # A counter's name already ends in _total there.
    return {n + ("" if t == "counter" else s) for n, t in found for s in SUFFIXES[t]}


def vllm_samples(model_dir, tmp_path) -> set[str]:
    """What vLLM's Prometheus logger registers (with the kvtier connector)."""
    cfg = vllm_config(model_dir, ucm_settings(tmp_path / "store"))
    PrometheusStatLogger(cfg)
    names = set()
    for family in REGISTRY.collect():  # a labelled series shows with no children yet
        if family.name.startswith("vllm:"):
            names |= {family.name + s for s in SUFFIXES.get(family.type, [""])}
    return names


def dashboard_exprs() -> list[str]:
    dash = json.loads((REPO / "deploy" / "grafana" / "kvtier.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs and all(p.get("targets") for p in dash["panels"])
    return exprs


def test_dashboard_uses_only_exported_series(model_dir, tmp_path):
    vllm = vllm_samples(model_dir, tmp_path)
    kvtier = exported_samples()
    assert {n for n in vllm if n.startswith("vllm:kvtier_")} == kvtier  # SERIES is what registers
    known = vllm | kvtier | proxy_samples()
    used = set().union(*(promql_metrics(e) for e in dashboard_exprs()))
    assert used - known == set()
    # What the dashboard is for: hit rate, GB/s, TTFT, backend health.
    for name in ("vllm:kvtier_hit_blocks_total", "vllm:kvtier_lookup_blocks_total",
                 "vllm:kvtier_load_bytes_total", "vllm:kvtier_save_bytes_total",
                 "vllm:time_to_first_token_seconds_bucket", "kvtier_proxy_backend_healthy"):
        assert name in used, name


def test_metrics_doc_lists_every_series():
    doc = (REPO / "docs" / "metrics.md").read_text()
    listed = set(re.findall(r"^\| `(vllm:kvtier_\w+)` \| (\w+) \|", doc, re.M))
    assert listed == {(s.samples[0] if s.kind != "histogram" else s.name, s.kind)
                      for s in SERIES}


def test_prometheus_scrapes_the_one_machine_cluster():
    cluster = yaml.safe_load((REPO / "deploy" / "seed" / "cluster_one_machine.yaml").read_text())
    expected = {f"127.0.0.1:{cluster[role]['server_port'] + i}": (role, str(i))
                for role in ("prefill", "decode") for i in range(cluster[role]["dp_size"])}
    expected[f"127.0.0.1:{cluster['proxy']['port']}"] = ("proxy", None)
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    scraped = {}
    for job in prom["scrape_configs"]:
        for sc in job["static_configs"]:
            for target in sc["targets"]:
                scraped[target] = (sc["labels"]["role"], sc["labels"].get("dp_rank"))
    assert scraped == expected
