"""torch fp32 against OpenVINO (f32, bf16) on this CPU: forward time per input at batch 1 and 8, hot and after idling.

    python -m benchmarks.backends_bench                 # ViT-B-32 and CLAP HTSAT, random weights
    python -m benchmarks.backends_bench --parts image --repeats 20

Models are random-weight checkpoints of the real architectures (``server.devmodels``; timings do not depend on
the weights), built through the server's factory (``server.encoders.build_encoder``) and timed through the
``Encoder`` protocol: ``encode(prepare(batch))`` with the preparation done once, outside the timing. Each
configuration is timed in a hot loop (calls back to back) and with 15 ms of idle before each call (a camera at
~60 fps leaves gaps like that: thread pools that go to sleep in them pay to wake up). The ``text`` part times
label encoding: the torch text tower as the server runs it against the same tower converted to OpenVINO.
Figures are medians (and bests) per input, printed beside the CPU's model and flags; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from server.protocol import Modality

PARTS = ("image", "audio", "text")
BATCHES = (1, 8)
IDLE_S = 0.015
CONFIGS = (("torch", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu() -> dict[str, Any]:
    from server.cpu import cpu_info

    info = cpu_info()
    found = set(info["flags"])
    return {"model": info["model"], "flags": {flag: flag in found for flag in FLAGS}, "cores": info["cores"]}


def machine() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"cpu": cpu(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        from server.openvino_backend import import_openvino

        openvino = import_openvino()
        facts["openvino"] = openvino.get_version()
        facts["openvino_cpu_capabilities"] = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except ImportError:
        facts["openvino"] = None
    facts["load_average"] = os.getloadavg()
    return facts


def timed(call: Any, repeats: int, idle_s: float) -> tuple[float, float]:
    """Median and best seconds of ``call()`` over ``repeats`` calls, each after ``idle_s`` of sleep (0: back to
    back). On a shared machine the best is the steadier figure; both are reported."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        if idle_s:
            time.sleep(idle_s)
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


def inputs_for(modality: str, encoder: Any, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if modality == "image":
        return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(count)]
    rate = int(encoder.sample_rate)
    return [(0.1 * rng.standard_normal(5 * rate)).astype(np.float32) for _ in range(count)]


def bench_tower(modality: Modality, model: str, repeats: int) -> list[dict[str, Any]]:
    """Load time and forward time per input for every backend and precision."""
    from server.encoders import ModelSpec, build_encoder, missing_model

    rows = []
    for backend, precision in CONFIGS:
        spec = ModelSpec(modality, model, backend=backend, precision=precision)
        row: dict[str, Any] = {"modality": modality, "backend": backend, "precision": precision}
        problem = missing_model(spec)
        if problem:
            rows.append({**row, "refused": problem})
            print(f"{modality} {backend} {precision}: refused: {problem}", flush=True)
            continue
        started = time.perf_counter()
        encoder = build_encoder(spec)
        row["load_s"] = round(time.perf_counter() - started, 2)
        if backend == "openvino":  # a restart: the IR and the compiled blob come from the cache
            started = time.perf_counter()
            encoder = build_encoder(spec)
            row["cached_load_s"] = round(time.perf_counter() - started, 2)
        for batch in BATCHES:
            prepared = encoder.prepare(inputs_for(modality, encoder, batch))
            for label, idle in (("hot", 0.0), ("idle15", IDLE_S)):
                median, best = timed(lambda e=encoder, p=prepared: e.encode(p), repeats, idle)
                row[f"b{batch}_{label}_ms_per_input"] = round(median * 1000 / batch, 2)
                row[f"b{batch}_{label}_best_ms_per_input"] = round(best * 1000 / batch, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_text(model: str, counts: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    """Label encoding: the torch text path as served (padding cut per length-sorted chunk) against open_clip's text
    tower converted to OpenVINO with a dynamic batch and length, fed the same cut chunks."""
    import torch

    from server.clip import TEXT_BATCH
    from server.encoders import ModelSpec, build_encoder
    from server.openvino_backend import HINTS, _telemetry_declined, cpu_has_bf16, import_openvino

    openvino = import_openvino()

    labels = [line.strip() for line in (Path(__file__).resolve().parent.parent / "labels" / "image.txt").open()]
    labels = [label for label in labels if label and not label.startswith("#")]
    encoder: Any = build_encoder(ModelSpec("image", model))

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = encoder.model  # a submodule, so tracing sees its weights as parameters

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = encoder.encode_tokens_cut(tokens)
            return out

    example = encoder.tokenizer(["a photo of a cat.", "a photo of a dog."])[:, :12]
    with torch.no_grad():
        traced = torch.jit.trace(TextTower().eval(), (example,), check_trace=False, strict=False)
    with _telemetry_declined():
        converted = openvino.convert_model(traced, input=[openvino.PartialShape([-1, -1])])
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    compiled = {
        p: openvino.Core().compile_model(
            converted, "CPU", {"INFERENCE_PRECISION_HINT": HINTS[p], "PERFORMANCE_HINT": "LATENCY"}
        )
        for p in precisions
    }

    def openvino_text(prompts: list[str], precision: str) -> np.ndarray:
        tokens = encoder.tokenizer(prompts)
        lengths = encoder._real_lengths(tokens)
        order = torch.argsort(lengths)
        out = np.empty((len(prompts), encoder.model.text_projection.shape[-1]), dtype=np.float32)
        for start in range(0, len(prompts), TEXT_BATCH):
            index = order[start : start + TEXT_BATCH]
            cut = int(lengths[index].max())
            out[index.numpy()] = compiled[precision](tokens[index, :cut].numpy())[0]
        return out

    rows = []
    for count in counts:
        prompts = [f"a photo of a {labels[i % len(labels)]} number {i}." for i in range(count)]
        row: dict[str, Any] = {"labels": count}
        row["torch_fp32_ms"] = round(timed(lambda p=prompts: encoder.encode_text(p), repeats, 0.0)[1] * 1000, 1)
        reference = encoder.encode_text(prompts)
        for precision in precisions:
            _, best = timed(lambda p=prompts, q=precision: openvino_text(p, q), repeats, 0.0)
            row[f"openvino_{precision}_ms"] = round(best * 1000, 1)
            got = openvino_text(prompts, precision)
            row[f"openvino_{precision}_min_cosine"] = round(float((got * reference).sum(-1).min()), 6)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, any of " + ", ".join(PARTS))
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per figure (default %(default)s)")
    parser.add_argument("--image-arch", default="ViT-B-32")
    parser.add_argument("--audio-arch", default="htsat", choices=("htsat", "tiny"))
    parser.add_argument("--models", type=Path, help="a folder to write (or reuse) the random-weight models in")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--threads", type=int, help="torch threads, and so OpenVINO's (the backend matches them; default: torch's)"
    )
    args = parser.parse_args(argv)
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from server.devmodels import write_clap, write_open_clip

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    report: dict[str, Any] = {"machine": machine()}
    print(json.dumps(report["machine"]), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.models or Path(scratch)
        # A fresh conversion cache unless one is given: the first OpenVINO load converts, the second reads it.
        os.environ.setdefault("SENSORIUM_OV_CACHE", str(Path(scratch) / "openvino"))
        image_dir, audio_dir = root / f"image-{args.image_arch}", root / f"audio-{args.audio_arch}"
        if parts & {"image", "text"} and not (image_dir / "open_clip_config.json").is_file():
            write_open_clip(image_dir, args.image_arch)
        if "audio" in parts and not (audio_dir / "config.json").is_file():
            write_clap(audio_dir, args.audio_arch)
        image_model = f"local-dir:{image_dir}"
        if "image" in parts:
            report["image"] = bench_tower("image", image_model, args.repeats)
        if "audio" in parts:
            report["audio"] = bench_tower("audio", str(audio_dir), args.repeats)
        if "text" in parts:
            report["text"] = bench_text(image_model, (100, 1000), max(3, args.repeats // 3))
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def render(report: dict[str, Any]) -> str:
    facts = report["machine"]
    flags = ", ".join(f"{flag} {'yes' if there else 'no'}" for flag, there in facts["cpu"]["flags"].items())
    lines = [
        f"CPU: {facts['cpu']['model']}, {facts['cpu']['cores']} cores; {flags}",
        f"torch {facts['torch']} ({facts['torch_threads']} threads), OpenVINO {facts.get('openvino')} "
        f"(CPU capabilities {facts.get('openvino_cpu_capabilities')}); load average {facts['load_average']}",
        "",
        "ms per input, median (best)  load s  cached  b1 hot         b1 idle15      b8 hot         b8 idle15",
    ]
    for modality in ("image", "audio"):
        for row in report.get(modality, []):
            name = f"{modality} {row['backend']} {row['precision']}"
            if "refused" in row:
                lines.append(f"{name:<28} refused: {row['refused']}")
                continue
            cells = [f"{row.get('load_s')!s:>6}", f"{row.get('cached_load_s', '')!s:>6}"] + [
                f"{row[f'b{b}_{label}_ms_per_input']:>6} ({row[f'b{b}_{label}_best_ms_per_input']:>6})"
                for b in BATCHES
                for label in ("hot", "idle15")
            ]
            lines.append(f"{name:<28} " + "  ".join(cells))
    for row in report.get("text", []):
        lines.append(f"text, {row['labels']} labels: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "labels"))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
