"""``sensorium bench``: what the model allows, and what the server delivers of it, in one run.

1. the limit: raw model forward at batch 1, 2, 4, 8;
2. the server end to end over loopback with 1, 2, 4, 8 clients, each as fast as its in-flight window allows;
3. label reload time for 10, 100, 1000 labels, and a one-label edit;
4. similarity + top-k for 1k, 10k, 100k labels;
5. every backend and precision side by side, hot and after idle, with the default's speedup over torch fp32
   (``benchmarks/backends.py``);
6. the same figures for audio windows.

Its header says what it ran on: the CPU and the flags that pick speed paths (AMX, AVX512-BF16, AVX-512, AVX2),
the threads, and what ``auto`` chose; its last lines, the goals of the default path with their measured ratios.

Without model flags it times random-weight models of the real architectures (ViT-B-32, HTSAT CLAP),
written by ``sensorium dev-models``: timings do not depend on the weights. It prints a table, writes
JSON and, with matplotlib installed, a PNG plot. ``--parts`` picks any subset of the parts; ``text-backends``
(label encoding on torch against OpenVINO) runs only when asked for.

Models are built through the server's one factory (``server.encoders.build_encoder``) and used only
through the ``Encoder`` protocol, so the bench times what the server runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.backends import (
    goals,
    render_backends,
    render_goals,
    render_text_backends,
    time_backends,
    time_text_backends,
)
from benchmarks.measure import camera_frame, jpeg, markdown_table, realistic_labels, sample_input, timed
from clients.ledger import percentile
from server.encoders import Encoder, ModelSpec, build_encoder, model_specs
from server.settings import BackendChoice, DeviceChoice, PrecisionChoice, Settings

PARTS = ("forward", "server", "reload", "similarity", "backends")
ON_REQUEST = ("text-backends",)  # accepted by --parts, not in the default run
TARGET_PARTS = ("server", "reload", "similarity")
BATCHES = (1, 2, 4, 8)
CLIENTS = (1, 2, 4, 8)
LABEL_COUNTS = (10, 100, 1000)
SIMILARITY_COUNTS = (1_000, 10_000, 100_000)
# The first issue's targets; the two ratios to the forward are goals of the default path now (backends.goals).
TARGETS = {
    "p99_vs_p50_at_8": 3.0,
    "reload_1000_s": 5.0,
    "one_label_edit_s": 0.3,
    "similarity_100k_ms": 10.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-model", help="open_clip model to time (default: random-weight --image-arch)")
    parser.add_argument("--image-pretrained", help="pretrained tag or file for a built-in --image-model")
    parser.add_argument("--image-arch", default="ViT-B-32", help="architecture of the random-weight image model")
    parser.add_argument("--audio-model", help="CLAP checkpoint to time (default: random-weight --audio-arch)")
    parser.add_argument("--audio-arch", default="htsat", choices=("htsat", "tiny"))
    parser.add_argument("--no-audio", action="store_true", help="time images only")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "openvino"), help="as for serve")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="as for serve")
    parser.add_argument(
        "--seconds",
        type=float,
        default=8.0,
        help="seconds per client count; the model-side timings run for at most 1.5 s each, less with a smaller "
        "value (default %(default)s)",
    )
    parser.add_argument(
        "--inflight",
        type=int,
        default=1,
        help="inputs each client keeps in flight (default %(default)s: latency without queueing behind itself; "
        "2 is what the webcam client uses, trading latency for throughput)",
    )
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="the server's --batch-wait-ms")
    parser.add_argument(
        "--parts",
        type=parse_parts,
        default=",".join(PARTS),
        help="comma-separated parts to run, any of "
        + ", ".join(PARTS + ON_REQUEST)
        + " (default: all but "
        + ", ".join(ON_REQUEST)
        + ")",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for bench.json and bench.png")


def parse_parts(text: str) -> frozenset[str]:
    parts = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(parts - set(PARTS + ON_REQUEST))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts are any of {', '.join(PARTS + ON_REQUEST)} (got {text!r})")
    return parts


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report: dict[str, Any] = {"machine": machine(), "inflight": args.inflight, "parts": sorted(args.parts)}
    with tempfile.TemporaryDirectory() as scratch:
        image_model, audio_model = prepare_models(args, Path(scratch))
        models = {"image": image_model} if args.no_audio else {"image": image_model, "audio": audio_model}
        auto = {
            modality: model_spec(modality, model, args.device, "auto", "auto") for modality, model in models.items()
        }
        report["auto"] = {modality: config(spec) for modality, spec in auto.items()}
        for modality, model in models.items():
            report[modality] = bench_modality(modality, model, args, Path(scratch))
    report["targets"] = check_targets(report)
    report["goals"] = goals(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2))
    print(render_table(report))
    plotted = plot(report, args.out / "bench.png")
    print(f"\nwrote {args.out / 'bench.json'}" + (f" and {args.out / 'bench.png'}" if plotted else ""))
    return 0


def machine() -> dict[str, Any]:
    import torch

    from server.cpu import cpu_info, has_bf16_units

    try:
        from server.openvino_backend import import_openvino

        openvino: str | None = import_openvino().get_version()
    except ImportError:
        openvino = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openvino": openvino,
        "cpu": cpu_info()["model"],
        "cpu_flags": cpu_info()["flags"],
        "bf16_units": has_bf16_units(),
        "cpu_cores": cpu_info()["cores"],
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


def prepare_models(args: argparse.Namespace, scratch: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from server.devmodels import write_clap, write_open_clip

    if args.image_model:
        image = {"model": args.image_model, "pretrained": args.image_pretrained}
    else:
        image = {"model": f"local-dir:{write_open_clip(scratch / 'image', args.image_arch)}", "pretrained": None}
    audio: dict[str, Any] = {}
    if not args.no_audio:
        audio = {"model": args.audio_model or str(write_clap(scratch / "audio", args.audio_arch))}
    return image, audio


# --- one modality ------------------------------------------------------------------------------


def model_spec(
    modality: str, model: dict[str, Any], device: DeviceChoice, backend: BackendChoice, precision: PrecisionChoice
) -> ModelSpec:
    """The server's own resolution of device, backend and precision for one model."""
    settings = Settings(
        image_model=model["model"] if modality == "image" else Settings.image_model,
        image_pretrained=model.get("pretrained"),
        audio_model=model["model"] if modality == "audio" else Settings.audio_model,
        no_image=modality != "image",
        no_audio=modality != "audio",
        device=device,
        backend=backend,
        precision=precision,
    )
    (spec,) = model_specs(settings)
    return spec


def config(spec: ModelSpec) -> dict[str, str]:
    return {"device": spec.device, "backend": spec.backend, "precision": spec.precision}


def bench_modality(modality: str, model: dict[str, Any], args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    # The server's own choice of device, backend and precision, so every part times one path.
    spec = model_spec(modality, model, args.device, args.backend, args.precision)
    encoder = build_encoder(spec)
    model.update(backend=encoder.backend, precision=encoder.precision)
    print(f"{modality}: {encoder.name} on {encoder.device} ({encoder.backend}, {encoder.precision})", file=sys.stderr)
    out: dict[str, Any] = {
        "model": encoder.name,
        "device": encoder.device,
        "backend": encoder.backend,
        "precision": encoder.precision,
    }
    parts: frozenset[str] = args.parts
    # Timing windows for the model-side parts: their usual length, or shorter with a short --seconds.
    window = min(1.5, args.seconds)
    if "forward" in parts:
        sample = sample_input(encoder)
        out["forward"] = [time_forward(encoder, sample, batch, window) for batch in BATCHES]
    if "similarity" in parts:
        out["similarity"] = [time_similarity(n, encoder, min(0.5, window)) for n in SIMILARITY_COUNTS]
    if "reload" in parts:
        out["reload"] = time_reloads(encoder)
        if encoder.modality == "image" and encoder.backend == "torch":
            prompts = [f"a photo of a {label}." for label in realistic_labels(1000, "stock")]
            out["reload"].update(time_stock_text(encoder, model, prompts))
    if "backends" in parts:
        out["backends"] = time_backends(spec, encoder, args.precision, window)
    if "text-backends" in parts and modality == "image":
        out["text_backends"] = time_text_backends(spec, window)
    if "server" in parts:
        out["server"] = time_server(modality, model, args, scratch)
    return out


def time_forward(encoder: Encoder, sample: Any, batch: int, window: float = 1.5) -> dict[str, float]:
    prepared = encoder.prepare([sample] * batch)
    prepare_ms = timed(lambda: encoder.prepare([sample] * batch), min_runs=3, min_seconds=min(0.5, window))
    times = timed(lambda: encoder.encode(prepared), min_seconds=window)
    p50 = percentile(times, 50)
    return {
        "batch": batch,
        "p50_ms": round(p50, 2),
        "per_item_ms": round(p50 / batch, 2),
        "items_per_s": round(1000 * batch / p50, 2),
        "preprocess_per_item_ms": round(percentile(prepare_ms, 50) / batch, 3),
    }


def time_similarity(count: int, encoder: Encoder, window: float = 0.5) -> dict[str, float]:
    from server.scoring import normalize_rows, similarities, top_labels

    rng = np.random.default_rng(0)
    dim = encoder.encode_text(["a"]).shape[1]
    matrix = normalize_rows(rng.normal(size=(count, dim)).astype(np.float32))
    names = tuple(f"label {i}" for i in range(count))

    def batch_of(size: int) -> float:
        """Scoring as the worker does it: one matrix product for the batch, then top-k row by row."""
        embeddings = normalize_rows(rng.normal(size=(size, dim)).astype(np.float32))

        def once() -> None:
            similarity = similarities(embeddings, matrix)
            scores = encoder.scoring.scores(similarity)
            for row in range(size):
                top_labels(names, scores[row], similarity[row], 5, 0.0)

        return percentile(timed(once, min_runs=20, min_seconds=window), 50) / size

    return {"labels": count, "p50_ms": round(batch_of(1), 3), "per_frame_at_batch_8_ms": round(batch_of(8), 3)}


def time_reloads(encoder: Encoder) -> dict[str, Any]:
    from server.labelsets import EmbeddingCache, LabelSource

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.txt"
        for count in LABEL_COUNTS:
            path.write_text("\n".join(realistic_labels(count, salt=str(count))))
            source = LabelSource(encoder.modality, path, encoder, EmbeddingCache(), lambda message: None, 0)
            started = time.perf_counter()
            source.load_now()
            out[f"labels_{count}_s"] = round(time.perf_counter() - started, 3)
        # one edit to the 1000-label file, through the same reload path the file watcher takes
        lines = path.read_text().splitlines()
        lines[500] = "freshly edited label"
        path.write_text("\n".join(lines))

        async def reload() -> float:
            started = time.perf_counter()
            await source.reload()
            return time.perf_counter() - started

        out["one_label_edit_s"] = round(asyncio.run(reload()), 3)
        source.close()
    return out


def time_stock_text(encoder: Encoder, model: dict[str, Any], prompts: list[str]) -> dict[str, float]:
    """The server's encode_text against open_clip's stock one (every prompt padded to 77 tokens), same prompts.

    The stock path runs on a second copy of the model that open_clip loads here with its own public API,
    from the same name, weights, device and precision as the server's encoder.
    """
    import open_clip
    import torch

    started = time.perf_counter()
    ours = encoder.encode_text(prompts)
    ours_s = time.perf_counter() - started
    name, local = model["model"], model["model"].startswith("local-dir:")
    stock_model, _, _ = open_clip.create_model_and_transforms(
        name,
        pretrained=None if local else model.get("pretrained"),
        device=encoder.device,
        precision=encoder.precision,
        require_pretrained=True,
    )
    stock_model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    started = time.perf_counter()
    with torch.inference_mode():
        stock = torch.cat(
            [
                stock_model.encode_text(tokenizer(prompts[i : i + 256]).to(encoder.device), normalize=True)
                for i in range(0, len(prompts), 256)
            ]
        )
    stock_s = time.perf_counter() - started
    difference = float(np.abs(ours - stock.float().cpu().numpy()).max())
    del stock_model
    if encoder.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "text_1000_cut_s": round(ours_s, 3),
        "text_1000_stock_s": round(stock_s, 3),
        "text_cut_max_abs_diff": difference,
    }


# --- the server, end to end ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_server(modality: str, model: dict[str, Any], args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    port = free_port()
    command = [sys.executable, "-m", "server", "--port", str(port), "--device", args.device, "--label-cache", ""]
    command += ["--backend", model["backend"], "--precision", model["precision"]]
    if args.batch_wait_ms is not None:
        command += ["--batch-wait-ms", str(args.batch_wait_ms)]
    if modality == "image":
        command += ["--no-audio", "--image-model", model["model"]]
        if model.get("pretrained"):
            command += ["--image-pretrained", model["pretrained"]]
    else:
        command += ["--no-image", "--audio-model", model["model"]]
    log = open(scratch / f"server-{modality}.log", "w")  # noqa: SIM115 - closed below, after the process
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, server)
        return [asyncio.run(drive_clients(modality, port, n, args.seconds, args.inflight)) for n in CLIENTS]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def wait_healthy(port: int, server: subprocess.Popen[bytes]) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited during start-up; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if json.load(reply)["status"] == "ok":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError("the server did not become ready")


async def drive_clients(modality: str, port: int, clients: int, seconds: float, inflight: int) -> dict[str, Any]:
    from clients.client import SensoriumClient

    url = f"ws://127.0.0.1:{port}/ws"
    frame = jpeg(camera_frame())
    hop_pcm = (np.random.default_rng(1).normal(0, 0.1, 48_000) * 32767).astype("<i2").tobytes()

    async def one(index: int) -> SensoriumClient:
        client = SensoriumClient(url, connect_timeout=30)
        await client.start()
        stream = f"s{index}"
        consumer = asyncio.create_task(_drain(client))
        deadline = time.monotonic() + seconds
        seq = 0
        while time.monotonic() < deadline:
            if modality == "image":
                if await client.wait_for_slot("image", stream, inflight, timeout=1):
                    await client.send_frame(frame, seq, stream=stream)
                    seq += 1
            else:
                # one hop of audio per message, at most two windows ahead of the results
                def ahead(sent: int = seq) -> bool:
                    return sent - client.ledger.results - client.ledger.dropped < inflight

                if await client.wait_until(ahead, timeout=1):
                    await client.send_audio(hop_pcm, seq, 48_000, stream=stream)
                    seq += 1
        await client.wait_until(lambda: False, timeout=1.0)  # let the last answers in
        await client.close()
        await consumer
        return client

    started = time.monotonic()
    done = await asyncio.gather(*(one(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    round_trips = [rt for c in done for rt in c.ledger.round_trips]
    results = [c.ledger.results for c in done]
    return {
        "clients": clients,
        "results_per_s": round(sum(results) / elapsed, 2),
        "per_client_results_per_s": round(sum(results) / elapsed / clients, 2),
        "p50_ms": round(percentile(round_trips, 50), 1),
        "p95_ms": round(percentile(round_trips, 95), 1),
        "p99_ms": round(percentile(round_trips, 99), 1),
        "dropped": sum(c.ledger.dropped for c in done),
        "stage_p50_ms": {
            stage: round(percentile([v for c in done for v in c.ledger.stages[stage]], 50), 2)
            for stage in done[0].ledger.stages
            if any(c.ledger.stages[stage] for c in done)
        },
    }


async def _drain(client: Any) -> None:
    async for _ in client.events():
        pass


# --- report --------------------------------------------------------------------------------------


def check_targets(report: dict[str, Any]) -> dict[str, Any]:
    image = report.get("image", {})
    if not all(part in image for part in TARGET_PARTS):
        return {}  # a partial run (--parts) cannot be held to the targets
    server = {s["clients"]: s for s in image["server"]}
    similarity = {s["labels"]: s for s in image["similarity"]}
    ratios = {
        "p99_vs_p50_at_8": server[8]["p99_ms"] / server[8]["p50_ms"],
        "reload_1000_s": image["reload"]["labels_1000_s"],
        "one_label_edit_s": image["reload"]["one_label_edit_s"],
        "similarity_100k_ms": similarity[100_000]["per_frame_at_batch_8_ms"],
    }
    return {
        name: {"value": round(value, 3), "target": TARGETS[name], "met": value <= TARGETS[name]}
        for name, value in ratios.items()
    }


def render_table(report: dict[str, Any]) -> str:
    lines = header(report)
    for modality in ("image", "audio"):
        if modality in report:
            lines += _modality_tables(modality, report[modality], report.get("inflight", 2))
    if report.get("targets"):
        lines += ["", "targets (image)", ""]
        rows = [
            [name, t["value"], f"≤ {t['target']}", "yes" if t["met"] else "NO"] for name, t in report["targets"].items()
        ]
        lines += markdown_table(["target", "value", "goal", "met"], rows)
    if report.get("goals"):
        lines += render_goals(report["goals"])
    return "\n".join(lines)


# What the flags of server.cpu.FLAGS_OF_INTEREST are called in the tables.
FLAG_NAMES = {"AMX": ("amx_bf16", "amx_tile"), "AVX512-BF16": ("avx512_bf16",), "AVX-512": ("avx512f",),
              "AVX2": ("avx2",)}  # fmt: skip


def header(report: dict[str, Any]) -> list[str]:
    """The machine and the paths chosen: every figure below depends on them."""
    m = report["machine"]
    flags = set(m.get("cpu_flags") or [])
    units = ", ".join(f"{name} {'yes' if flags & set(names) else 'no'}" for name, names in FLAG_NAMES.items())
    lines = [
        f"cpu: {m.get('cpu')}, {m.get('cpu_cores')} cores; {units} (flags: {', '.join(sorted(flags)) or 'none'})"
        + (f"; cuda: {m['cuda']}" if m.get("cuda") else ""),
        f"torch {m.get('torch')} with {m.get('torch_threads')} threads; "
        f"OpenVINO {m.get('openvino') or 'not installed'}; "
        f"python {m.get('python')}; load average at start {', '.join(map(str, m.get('load_average_at_start') or []))}",
    ]
    if report.get("auto"):
        chosen = ", ".join(f"{modality} {c['backend']} {c['precision']} ({c['device']})"
                           for modality, c in report["auto"].items())  # fmt: skip
        lines.append(f"auto chose: {chosen}")
    return lines


def _modality_tables(modality: str, part: dict[str, Any], inflight: int) -> list[str]:
    how = ", ".join(str(part[key]) for key in ("backend", "precision") if key in part)
    lines = ["", f"## {modality}: {part['model']} on {part['device']}" + (f" ({how})" if how else "")]
    if "forward" in part:
        lines += ["", "model forward (the limit)", ""]
        lines += markdown_table(
            ["batch", "p50 ms", "ms/item", "items/s", "preprocess ms/item"],
            [[f["batch"], f["p50_ms"], f["per_item_ms"], f["items_per_s"], f["preprocess_per_item_ms"]]
             for f in part["forward"]],
        )  # fmt: skip
    if "server" in part:
        lines += ["", f"server end to end over loopback (each client: at most {inflight} in flight)", ""]
        lines += markdown_table(
            ["clients", "results/s", "per client/s", "p50 ms", "p95 ms", "p99 ms", "dropped"],
            [[s["clients"], s["results_per_s"], s["per_client_results_per_s"], s["p50_ms"], s["p95_ms"],
              s["p99_ms"], s["dropped"]] for s in part["server"]],
        )  # fmt: skip
        lines += ["", "per-stage server latency, 1 client, p50 (ms)", ""]
        stages = part["server"][0]["stage_p50_ms"]
        lines += markdown_table([name.removesuffix("_ms") for name in stages], [list(stages.values())])
    if "reload" in part:
        reload = part["reload"]
        rows = [[n, reload[f"labels_{n}_s"]] for n in LABEL_COUNTS] + [["1000, one edited", reload["one_label_edit_s"]]]
        if "text_1000_stock_s" in reload:
            rows.append(["1000, text tower at a fixed 77 tokens (stock open_clip)", reload["text_1000_stock_s"]])
            rows.append(["1000, text tower cut to the longest prompt (ours)", reload["text_1000_cut_s"]])
        lines += ["", "label reload (cold cache, seconds)", "", *markdown_table(["labels", "seconds"], rows)]
    if "similarity" in part:
        lines += ["", "similarity + softmax + top-5 (ms per input)", ""]
        lines += markdown_table(
            ["labels", "batch of 1", "in a batch of 8"],
            [[s["labels"], s["p50_ms"], s["per_frame_at_batch_8_ms"]] for s in part["similarity"]],
        )
    if "backends" in part:
        lines += render_backends(part["backends"])
    if "text_backends" in part:
        lines += render_text_backends(part["text_backends"])
    return lines


def plot(report: dict[str, Any], path: Path) -> bool:
    """Latency and throughput per modality: the server against clients, the model's forward as its limit.

    Works with any subset of parts: server and forward together, either alone (forward alone is drawn
    against batch size), and nothing to draw (False) when a run has neither.
    """
    modalities = [m for m in ("image", "audio") if m in report and ("server" in report[m] or "forward" in report[m])]
    if not modalities:
        print("(no forward or server figures in this run: no plot)", file=sys.stderr)
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install matplotlib)", file=sys.stderr)
        return False
    figure, axes = plt.subplots(len(modalities), 2, figsize=(11, 4 * len(modalities)), squeeze=False)
    for row, modality in enumerate(modalities):
        part = report[modality]
        latency, throughput = axes[row]
        forward = part.get("forward")
        server = part.get("server")
        if server:
            clients = [s["clients"] for s in server]
            for key, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
                latency.plot(clients, [s[key] for s in server], style, label=key.removesuffix("_ms"))
            throughput.plot(clients, [s["results_per_s"] for s in server], "o-", label="server results/s")
            x, xlabel = clients, "clients"
            if forward:
                latency.axhline(forward[0]["p50_ms"], color="gray", linestyle="-.", label="model forward, batch 1")
                best = max(f["items_per_s"] for f in forward)
                throughput.axhline(best, color="gray", linestyle="-.", label="model limit (best batched forward)")
        else:
            x, xlabel = [f["batch"] for f in forward], "batch"
            latency.plot(x, [f["p50_ms"] for f in forward], "o-", label="model forward p50")
            throughput.plot(x, [f["items_per_s"] for f in forward], "o-", label="model forward items/s")
        latency.set(title=f"{modality}: latency", xlabel=xlabel, ylabel="ms", xticks=x)
        latency.legend()
        rate = "results/s" if server else "items/s"
        throughput.set(title=f"{modality}: throughput", xlabel=xlabel, ylabel=rate, xticks=x)
        throughput.set_ylim(bottom=0)
        throughput.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sensorium bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
