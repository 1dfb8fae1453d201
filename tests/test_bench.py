"""``sensorium bench`` end to end with the tiny random-weight models: short runs, real numbers, a plot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from server.cli import main
from server.openvino_backend import import_openvino

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
TINY = ["--image-arch", "tiny", "--audio-arch", "tiny", "--device", "cpu", "--seconds", "0.2"]


def bench(out: Path, *flags: str, plotted: bool = True) -> dict[str, Any]:
    assert main(["bench", *TINY, "--out", str(out), *flags]) == 0
    report: dict[str, Any] = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").exists() == (plotted and HAS_MATPLOTLIB)
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
    assert "server end to end" not in table and "backends:" not in table


def test_backends_part_times_every_backend_against_torch(tmp_path, monkeypatch, capsys):
    """The backends part alone: a row per backend and precision, timed ones with positive figures, a speedup over
    torch fp32 and a cosine to it on the samples; the ones this machine cannot run say why."""
    monkeypatch.setenv("SENSORIUM_OV_CACHE", str(tmp_path / "openvino"))
    report = bench(tmp_path, "--parts", "backends", plotted=False)
    table = capsys.readouterr().out
    try:
        import_openvino()
        has_openvino = True
    except ImportError:
        has_openvino = False
    assert report["auto"]["image"]["backend"] == ("openvino" if has_openvino else "torch")
    assert f"auto chose: image {report['auto']['image']['backend']} " in table
    assert "AVX2 " in table and "AVX512-BF16 " in table and "AMX " in table
    for modality in ("image", "audio"):
        part = report[modality]["backends"]
        assert part["cosine_inputs"].startswith("samples/: ")
        rows = {(row["device"], row["backend"], row["precision"]): row for row in part["rows"]}
        assert [row["chosen"] for row in rows.values()].count(True) == 1
        timed = [rows[("cpu", "torch", "fp32")]] + ([rows[("cpu", "openvino", "fp32")]] if has_openvino else [])
        for row in timed:
            assert "skipped" not in row
            for key in ("b1_hot", "b1_idle", "b8_hot", "b8_idle"):
                assert 0 < row[f"{key}_best_ms"] <= row[f"{key}_ms"]
                assert row["speedup"][key] > 0 and row["speedup_best"][key] > 0
            assert row["min_cosine"] > 0.999  # OpenVINO f32 computes what torch fp32 does
        assert rows[("cpu", "torch", "fp32")]["speedup"]["b1_hot"] == 1.0
        if not has_openvino:
            assert "not installed" in rows[("cpu", "openvino", "fp32")]["skipped"]
        if not torch.cuda.is_available():
            assert rows[("cuda", "torch", "fp16")]["skipped"] == "no CUDA device"
        assert all(row["skipped"] for row in part["rows"] if "b1_hot_ms" not in row)
    assert "| torch fp32 | cpu | " in table and "min cosine to torch fp32 on samples/" in table
    found = {(g["modality"], g["goal"]): g for g in report["goals"]}
    speed = found[("image", "images/s at batch 8 (hot) over torch fp32, CPU without bf16 units")]
    assert speed["value"] > 0 and speed["verdict"] in {"met", "not met", "n/a here (for CPUs without bf16 units)"}
    latency = found[("image", "1 client's end-to-end p50 over its own hot batch-1 forward")]
    assert latency["value"] is None and latency["verdict"].startswith("not measured")


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
    from benchmarks.backends import goals
    from benchmarks.bench import check_targets, render_table

    for parts in SUBSETS:
        report = synthetic(parts)
        report["targets"] = check_targets(report)
        report["goals"] = goals(report)
        held = {"server", "reload", "similarity"} <= set(parts)
        assert bool(report["targets"]) == held, parts
        ratios = [g for g in report["goals"] if "forward" in g["goal"]]
        assert len(ratios) == 4  # two per modality, measured or not
        assert all((g["value"] is not None) == ({"forward", "server"} <= set(parts)) for g in ratios), parts
        table = render_table(report)
        assert ("model forward" in table) == ("forward" in parts)
        assert ("server end to end" in table) == ("server" in parts)
        assert ("label reload" in table) == ("reload" in parts)
        assert ("targets (image)" in table) == held
        assert "goals of the chosen path" in table
    found = {(g["modality"], g["goal"]): g for g in goals(synthetic(ALL_PARTS))}
    throughput = found[("image", "8 clients' results/s over its own best batched forward")]
    assert (throughput["value"], throughput["verdict"]) == (0.8, "not met")
    latency = found[("audio", "1 client's end-to-end p50 over its own hot batch-1 forward")]
    assert (latency["value"], latency["verdict"]) == (1.1, "met")


def test_speed_goals_apply_by_the_cpus_bf16_units():
    """The speedup goals: 3x/2x on a CPU with bf16 units, 1.2x elsewhere; the other pair is n/a, still printed."""
    from benchmarks.backends import goals

    def row(backend: str, precision: str, chosen: bool, b1: float, b8: float) -> dict[str, Any]:
        return {"device": "cpu", "backend": backend, "precision": precision, "chosen": chosen,
                "speedup": {"b1_hot": b1, "b8_hot": b8}, "speedup_best": {"b1_hot": b1, "b8_hot": b8}}  # fmt: skip

    rows = [row("torch", "fp32", False, 1.0, 1.0), row("openvino", "bf16", True, 2.5, 1.5)]
    for bf16_units in (True, False):
        report = {"machine": {"bf16_units": bf16_units}, "image": {"model": "tiny", "backends": {"rows": rows}}}
        verdicts = {g["goal"]: (g["value"], g["verdict"]) for g in goals(report) if "over torch fp32" in g["goal"]}
        with_units = "met" if bf16_units else "n/a here (needs a CPU with bf16 units)"
        without = "n/a here (for CPUs without bf16 units)" if bf16_units else "met"
        assert verdicts == {
            "images/s at batch 8 (hot) over torch fp32, CPU with bf16 units": (
                1.5,
                "not met" if bf16_units else with_units,
            ),
            "images/s at batch 8 (hot) over torch fp32, CPU without bf16 units": (1.5, without),
            "images/s at batch 1 (hot) over torch fp32, CPU with bf16 units": (2.5, with_units),
            "images/s at batch 1 (hot) over torch fp32, CPU without bf16 units": (2.5, without),
        }


@pytest.mark.parametrize("parts", [("server",), ("forward",), ALL_PARTS, ("reload", "similarity")], ids=",".join)
def test_plot_of_any_subset_of_parts(tmp_path, parts):
    from benchmarks.bench import plot

    drawn = plot(synthetic(parts), tmp_path / "bench.png")
    drawable = HAS_MATPLOTLIB and ("forward" in parts or "server" in parts)
    assert drawn == drawable == (tmp_path / "bench.png").exists()
