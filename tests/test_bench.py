"""``sensorium bench`` end to end with the tiny random-weight models: short runs, real numbers, a plot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from server.cli import main

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
TINY = ["--image-arch", "tiny", "--audio-arch", "tiny", "--device", "cpu", "--seconds", "0.2"]


def bench(out: Path, *flags: str) -> dict[str, Any]:
    assert main(["bench", *TINY, "--out", str(out), *flags]) == 0
    report: dict[str, Any] = json.loads((out / "bench.json").read_text())
    if HAS_MATPLOTLIB:
        assert (out / "bench.png").stat().st_size > 0
    return report


def assert_server(part: dict[str, Any]) -> None:
    assert [s["clients"] for s in part["server"]] == [1, 2, 4, 8]
    for row in part["server"]:
        assert row["results_per_s"] > 0 and row["per_client_results_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["dropped"] >= 0
    assert part["server"][0]["stage_p50_ms"]["encode_ms"] > 0


def test_server_part_alone_runs_and_plots(tmp_path):
    """--parts server without forward: the plot used to look up the forward figures (KeyError)."""
    report = bench(tmp_path, "--parts", "server", "--no-audio")
    assert "audio" not in report
    assert set(report["image"]) >= {"model", "device", "server"}
    assert not {"forward", "reload", "similarity"} & set(report["image"])
    assert_server(report["image"])
    assert report["targets"] == {}  # a partial run is not held to the targets


def test_model_side_parts_run_and_plot(tmp_path, capsys):
    """Everything but the server: forward alone is plotted against batch size (it used to need the server)."""
    # torch: the stock text comparison is made against open_clip on torch (OpenVINO keeps torch's text tower)
    report = bench(tmp_path, "--parts", "forward,reload,similarity", "--no-audio", "--backend", "torch")
    part = report["image"]
    assert "server" not in part and "audio" not in report
    assert [f["batch"] for f in part["forward"]] == [1, 2, 4, 8]
    for row in part["forward"]:
        assert row["p50_ms"] > 0 and row["items_per_s"] > 0 and row["preprocess_per_item_ms"] > 0
    assert [s["labels"] for s in part["similarity"]] == [1_000, 10_000, 100_000]
    assert all(s["p50_ms"] > 0 and s["per_frame_at_batch_8_ms"] > 0 for s in part["similarity"])
    reload = part["reload"]
    assert all(reload[f"labels_{n}_s"] > 0 for n in (10, 100, 1000)) and reload["one_label_edit_s"] > 0
    # the server's text path against open_clip's stock one, run on a copy of the model open_clip loads itself
    assert reload["text_1000_stock_s"] > 0 and reload["text_1000_cut_s"] > 0
    assert reload["text_cut_max_abs_diff"] < 1e-4
    assert report["targets"] == {}
    table = capsys.readouterr().out
    assert "model forward (the limit)" in table and "stock open_clip" in table
    assert "server end to end" not in table


@pytest.mark.parametrize("parts", ["", "forward,gpu"])
def test_unknown_parts_are_refused(tmp_path, parts):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *TINY, "--out", str(tmp_path), "--parts", parts])
    assert exit_info.value.code == 2
    assert not (tmp_path / "bench.json").exists()


def synthetic(parts: tuple[str, ...]) -> dict[str, Any]:
    """A report with made-up figures for the given parts, shaped as the bench writes them."""
    rows: dict[str, Any] = {
        "forward": [
            {"batch": b, "p50_ms": 10.0 * b, "per_item_ms": 10.0, "items_per_s": 100.0, "preprocess_per_item_ms": 1.0}
            for b in (1, 2, 4, 8)
        ],
        "server": [
            {
                "clients": n,
                "results_per_s": 80.0,
                "per_client_results_per_s": 80.0 / n,
                "p50_ms": 11.0 * n,
                "p95_ms": 12.0 * n,
                "p99_ms": 13.0 * n,
                "dropped": 0,
                "stage_p50_ms": {"encode_ms": 9.0, "total_ms": 10.0},
            }
            for n in (1, 2, 4, 8)
        ],
        "reload": {"labels_10_s": 0.01, "labels_100_s": 0.1, "labels_1000_s": 1.0, "one_label_edit_s": 0.01},
        "similarity": [
            {"labels": n, "p50_ms": n / 1e4, "per_frame_at_batch_8_ms": n / 2e4} for n in (1_000, 10_000, 100_000)
        ],
    }
    part = {"model": "tiny", "device": "cpu", **{name: rows[name] for name in parts}}
    return {"machine": {}, "inflight": 1, "image": part, "audio": dict(part)}


ALL_PARTS = ("forward", "server", "reload", "similarity")
SUBSETS = [tuple(p for i, p in enumerate(ALL_PARTS) if mask >> i & 1) for mask in range(1, 16)]


def test_report_of_any_subset_of_parts():
    from benchmarks.bench import check_targets, render_table

    for parts in SUBSETS:
        report = synthetic(parts)
        report["targets"] = check_targets(report)
        assert bool(report["targets"]) == (parts == ALL_PARTS), parts
        table = render_table(report)
        assert ("model forward" in table) == ("forward" in parts)
        assert ("server end to end" in table) == ("server" in parts)
        assert ("label reload" in table) == ("reload" in parts)
        assert ("targets (image)" in table) == (parts == ALL_PARTS)
    assert check_targets(synthetic(ALL_PARTS))["throughput_8_vs_best_forward"]["value"] == 0.8


@pytest.mark.parametrize("parts", [("server",), ("forward",), ALL_PARTS, ("reload", "similarity")], ids=",".join)
def test_plot_of_any_subset_of_parts(tmp_path, parts):
    from benchmarks.bench import plot

    drawn = plot(synthetic(parts), tmp_path / "bench.png")
    drawable = HAS_MATPLOTLIB and ("forward" in parts or "server" in parts)
    assert drawn == drawable == (tmp_path / "bench.png").exists()
