"""Black-box audit through two V2 endpoints (a stdlib server and a real MLServer), and the HTTP oracle's errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from unlearnleak.cli import app
from unlearnleak.errors import ConfigError, QueryBudgetExceeded
from unlearnleak.oracle_http import EndpointError, HttpOracle

runner = CliRunner()
NES = ["--per-class", "1", "--generator", "nes", "--set", "max_steps=12"]


def _args(served: Any, out: Path, *extra: str) -> list[str]:
    return ["audit", "--original-endpoint", served.original, "--unlearned-endpoint", served.unlearned,
            "--input-shape", "3,8,8", "--num-classes", "10", "--out", str(out), *NES, *extra]


def test_black_box_audit_infers_the_label_and_counts_every_query(served: Any, tmp_path: Path) -> None:
    before_o, before_u = sum(served.logged_rows("original")), sum(served.logged_rows("unlearned"))
    requests_before = len(served.logged_rows("original")) + len(served.logged_rows("unlearned"))
    out = tmp_path / "audit"
    result = runner.invoke(app, _args(served, out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "black-box" and not report["partial"]
    assert report["labels"]["from_predictions"]["best"] == 3
    assert report["labels"]["from_predictions"]["detected"] is True
    assert "Label inference (black-box): label leaked: class 3 was deleted" in result.output
    assert "queries:" in result.output and "p = " in result.output
    q = report["queries"]
    assert q["original"]["rows"] == sum(served.logged_rows("original")) - before_o > 0
    assert q["unlearned"]["rows"] == sum(served.logged_rows("unlearned")) - before_u > 0
    requests_after = len(served.logged_rows("original")) + len(served.logged_rows("unlearned"))
    assert q["original"]["requests"] + q["unlearned"]["requests"] == requests_after - requests_before
    assert report["attacks"][0]["knowledge_used"] == []
    assert (out / "confidence_change.png").is_file()


def test_budget_exhausted_mid_attack_keeps_partial_results(served: Any, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    result = runner.invoke(app, _args(served, out, "--budget", "1000"))
    # the budget ran out before every class had probes: no label verdict (exit status 3), the rest is kept
    assert result.exit_code == 3, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is True and "budget" in report["partial_reason"]
    assert report["labels"]["from_predictions"]["verdict"] == "no_verdict"
    assert report["labels"]["from_predictions"]["ranked"] == [] and "no verdict on the label" in result.output
    assert report["queries"]["original"]["rows"] <= 1000 and report["queries"]["unlearned"]["rows"] <= 1000
    assert "PARTIAL" in result.output
    tiny = runner.invoke(app, _args(served, tmp_path / "tiny", "--budget", "30"))  # not even one probe
    assert tiny.exit_code == 0, tiny.output
    report = json.loads((tmp_path / "tiny" / "report.json").read_text())
    assert report["partial"] is True and report["attacks"][0]["probes"] is None
    assert report["queries"]["original"]["rows"] <= 30


@pytest.mark.parametrize(("model", "message"), [
    ("broken-json", "malformed JSON"), ("wrong-shape", "answered shape"), ("nosuch", "HTTP 404")])
def test_wrong_endpoints_are_one_line(served: Any, tmp_path: Path, model: str, message: str) -> None:
    if "stdlib" not in str(served.log) and model != "nosuch":
        pytest.skip("the malformed answers come from the stdlib test server")
    bad = served.unlearned.rsplit("/", 1)[0] + f"/{model}"
    args = _args(served, tmp_path / "o")
    args[args.index(served.unlearned)] = bad
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and message in result.output
    assert not (tmp_path / "o").exists()


def test_unreachable_endpoint_is_one_line_after_retries(tmp_path: Path) -> None:
    args = ["audit", "--original-endpoint", "http://127.0.0.1:9/v2/models/a", "--unlearned-endpoint",
            "http://127.0.0.1:9/v2/models/b", "--input-shape", "3,4,4", "--num-classes", "10", "--out",
            str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "unreachable after 4 attempts" in result.output
    assert "--original-endpoint" in result.output and not (tmp_path / "o").exists()


def test_http_oracle_batches_budgets_and_rate_limits(served: Any) -> None:
    oracle = HttpOracle(served.original, num_classes=10, input_shape=(3, 8, 8), budget=10, batch_size=3, rate_limit=50)
    proba = oracle.predict_proba(torch.rand(7, 3, 8, 8))
    assert proba.shape == (7, 10) and torch.allclose(proba.sum(1), torch.ones(7, dtype=torch.float64))
    assert oracle.queries == 7 and oracle.requests == 3  # 3 + 3 + 1 rows
    with pytest.raises(QueryBudgetExceeded):
        oracle.predict_proba(torch.rand(4, 3, 8, 8))
    assert oracle.queries == 7
    with pytest.raises(ConfigError, match="rate-limit"):
        HttpOracle(served.original, num_classes=10, input_shape=(3, 8, 8), rate_limit=0)
    with pytest.raises(EndpointError, match="only http:// and https:// are supported"):
        HttpOracle("ftp://x", num_classes=10, input_shape=(8,))


def test_transient_failures_are_retried_with_backoff(served: Any) -> None:
    if "stdlib" not in str(served.log):
        pytest.skip("the flaky model comes from the stdlib test server")
    flaky = served.original.rsplit("/", 1)[0] + "/flaky"
    oracle = HttpOracle(flaky, num_classes=10, input_shape=(3, 8, 8), batch_size=4, retries=2, backoff=0.01)
    x = torch.rand(8, 3, 8, 8)
    steady = HttpOracle(served.original, num_classes=10, input_shape=(3, 8, 8))
    assert torch.allclose(oracle.predict_proba(x), steady.predict_proba(x))
    assert oracle.requests == 4 and oracle.queries == 8  # each batch: one 503, then the answer
    no_retry = HttpOracle(flaky, num_classes=10, input_shape=(3, 8, 8), retries=0)
    with pytest.raises(EndpointError, match="unreachable after 1 attempts \\(HTTP 503\\)"):
        no_retry.predict_proba(x)
