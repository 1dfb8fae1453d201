"""``sensorium bench`` parts ``backends`` and ``text-backends``, and the speed goals of the default path.

``backends``: every backend and precision this machine can run, side by side, each built through the server's
factory from the same model as the rest of the bench: torch fp32 (the reference), torch bf16 (on a CPU with bf16
units, or when ``--precision bf16`` asks), OpenVINO f32 and bf16 (where OpenVINO runs bf16), CUDA fp16 (where
there is a device). A configuration that cannot run here is a row that says why. Each is timed per input at batch
1 and 8, in a hot loop and with 15 ms of idle before each call (frames arrive like that: thread pools asleep in
the gaps pay to wake up), held to torch fp32 by cosine on the pictures and sounds in ``samples/``, and its
speedup over torch fp32 is printed; the row of the path the rest of the bench times (``auto`` unless
``--backend``/``--precision`` say otherwise) is marked "chosen".

``text-backends`` (not in the default run: ~2 minutes of ViT-B-32 text): label encoding on torch as served
against the same text tower converted to OpenVINO, the measurement behind text staying on torch.

The goals are printed with their measured ratios and a verdict; nothing is asserted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.measure import markdown_table, realistic_labels, sample_input, timed
from clients.ledger import percentile
from server.encoders import Encoder, ModelSpec, build_encoder, missing_model
from server.hub import ModelUnavailable

SAMPLES = Path(__file__).resolve().parent.parent / "samples"  # in a checkout
BATCHES = (1, 8)
IDLE_S = 0.015
TIMES = tuple(f"b{batch}_{how}" for batch in BATCHES for how in ("hot", "idle"))
REFERENCE = ("cpu", "torch", "fp32")
CONFIGS = (REFERENCE, ("cpu", "torch", "bf16"), ("cpu", "openvino", "fp32"), ("cpu", "openvino", "bf16"),
           ("cuda", "torch", "fp16"))  # fmt: skip
NO_BF16_UNITS = (
    "no bf16 units (AMX, AVX512-BF16) on this CPU: torch emulates bf16, far slower than fp32 "
    "(--precision bf16 times it anyway)"
)


def time_backends(chosen: ModelSpec, encoder: Encoder, asked_precision: str, window: float) -> dict[str, Any]:
    """Every configuration's forward per input and cosine to torch fp32; ``encoder`` (built from ``chosen``, the
    bench's own path) is timed as its row, not loaded again."""
    media, described = sample_media(encoder)
    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    configs = list(CONFIGS) + [c for c in [config_of(chosen)] if c not in CONFIGS]
    for device, backend, precision in configs:
        spec = replace(chosen, device=device, backend=backend, precision=precision)
        row: dict[str, Any] = {"device": device, "backend": backend, "precision": precision, "chosen": spec == chosen}
        reason = skip_reason(spec, asked_precision)
        if reason:
            rows.append({**row, "skipped": reason})
            continue
        try:
            candidate = encoder if spec == chosen else build_encoder(spec)
        except (ModelUnavailable, ValueError) as exc:  # refused at load (a fused CLAP on OpenVINO, ...)
            rows.append({**row, "skipped": str(exc)})
            continue
        row.update(time_forward_per_input(candidate, sample_input(candidate), window))
        embeddings = candidate.encode(candidate.prepare(media))
        if reference is None and config_of(spec) == REFERENCE:
            reference = embeddings
        row["min_cosine"] = None if reference is None else round(float((embeddings * reference).sum(-1).min()), 6)
        rows.append(row)
        del candidate  # one extra model in memory at a time
    base = next(row for row in rows if config_of_row(row) == REFERENCE)
    for row in rows:
        if "skipped" not in row and "skipped" not in base:
            for figure in ("", "_best"):
                row[f"speedup{figure}"] = {
                    key: round(base[f"{key}{figure}_ms"] / row[f"{key}{figure}_ms"], 2) for key in TIMES
                }
    return {"cosine_inputs": described, "rows": rows}


def config_of(spec: ModelSpec) -> tuple[str, str, str]:
    return (spec.device, spec.backend, spec.precision)


def config_of_row(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["device"], row["backend"], row["precision"])


def skip_reason(spec: ModelSpec, asked_precision: str) -> str | None:
    if spec.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device"
    elif spec.backend == "torch" and spec.precision == "bf16" and asked_precision != "bf16":
        from server.cpu import has_bf16_units

        if not has_bf16_units():
            return NO_BF16_UNITS
    return missing_model(spec)


def time_forward_per_input(encoder: Encoder, sample: Any, window: float) -> dict[str, float]:
    out = {}
    for batch in BATCHES:
        prepared = encoder.prepare([sample] * batch)
        for how, idle_s in (("hot", 0.0), ("idle", IDLE_S)):
            times = timed(lambda p=prepared: encoder.encode(p), min_seconds=window, idle_s=idle_s)
            out[f"b{batch}_{how}_ms"] = round(percentile(times, 50) / batch, 2)
            # On a shared machine the median takes the others' load (two torch threads that wait for each other at
            # every operator lose a time slice whenever either is descheduled); the best is the steadier figure.
            out[f"b{batch}_{how}_best_ms"] = round(min(times) / batch, 2)
    return out


def sample_media(encoder: Encoder) -> tuple[list[Any], str]:
    """The pictures or sounds of ``samples/`` (each sound's first 5 s, at the model's rate), or, outside a checkout,
    the bench's synthetic input; and what they are, for the table."""
    if encoder.modality == "image":
        from PIL import Image

        paths = sorted(SAMPLES.glob("*.jpg"))
        media = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    else:
        from server.audio import decode_sound_file, resample

        rate = int(encoder.sample_rate or 0)
        paths = sorted([*SAMPLES.glob("*.wav"), *SAMPLES.glob("*.flac")])
        media = [resample(*decode_sound_file(path.read_bytes()), rate)[: 5 * rate] for path in paths]
    if not media:
        return [sample_input(encoder)], "the bench's synthetic input (no samples/ here)"
    return media, f"samples/: {', '.join(path.name for path in paths)}"


def render_backends(part: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "backends: forward ms per input, median / best (idle: 15 ms of sleep before each call), and the speedup over",
        f"torch fp32 of the medians / of the bests; min cosine to torch fp32 on {part['cosine_inputs']}",
        "",
    ]
    rows = []
    for row in part["rows"]:
        name = [f"{row['backend']} {row['precision']}" + (" (chosen)" if row["chosen"] else ""), row["device"]]
        if "skipped" in row:
            rows.append([*name, f"skipped: {row['skipped']}", *[""] * (len(TIMES) + 1)])
            continue
        cells = [f"{row[f'{key}_ms']} / {row[f'{key}_best_ms']}" + speedups(row, key) for key in TIMES]
        rows.append([*name, *cells, row["min_cosine"]])
    return lines + markdown_table(["backend", "device", *(t.replace("_", " ") for t in TIMES), "min cosine"], rows)


def speedups(row: dict[str, Any], key: str) -> str:
    return f" ({row['speedup'][key]}x / {row['speedup_best'][key]}x)" if "speedup" in row else ""


# --- the goals --------------------------------------------------------------------------------------------------


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed goals for the bench's path, each with its measured ratio (None: not measured) and a verdict."""
    bf16_units = bool(report.get("machine", {}).get("bf16_units"))
    out = []
    for modality in ("image", "audio"):
        part = report.get(modality)
        if not part:
            continue
        forward = {f["batch"]: f for f in part.get("forward", [])}
        server = {s["clients"]: s for s in part.get("server", [])}
        both = forward and server
        needs = "forward and server parts"
        out.append(goal(modality, "1 client's end-to-end p50 over its own hot batch-1 forward", "<=", 1.25,
                        server[1]["p50_ms"] / forward[1]["p50_ms"] if both else None, needs))  # fmt: skip
        best = max((f["items_per_s"] for f in forward.values()), default=0)
        out.append(goal(modality, "8 clients' results/s over its own best batched forward", ">=", 0.85,
                        server[8]["results_per_s"] / best if both else None, needs))  # fmt: skip
    rows = report.get("image", {}).get("backends", {}).get("rows", [])
    chosen: dict[str, Any] = next((row for row in rows if row["chosen"]), {})
    for batch, bf16_goal in ((8, 3.0), (1, 2.0)):
        value = chosen.get("speedup", {}).get(f"b{batch}_hot")
        # The verdict is the medians'; the bests' ratio is shown beside it (a shared machine moves the medians).
        of_bests = {"value_of_bests": chosen["speedup_best"][f"b{batch}_hot"]} if value else {}
        what = f"images/s at batch {batch} (hot) over torch fp32"
        out.append(goal("image", f"{what}, CPU with bf16 units", ">=", bf16_goal, value, "backends part",
                        None if bf16_units else "n/a here (needs a CPU with bf16 units)") | of_bests)  # fmt: skip
        out.append(goal("image", f"{what}, CPU without bf16 units", ">=", 1.2, value, "backends part",
                        "n/a here (for CPUs without bf16 units)" if bf16_units else None) | of_bests)  # fmt: skip
    return out


def goal(
    modality: str, name: str, op: str, threshold: float, value: float | None, needs: str, not_here: str | None = None
) -> dict[str, Any]:
    if value is None:
        verdict = f"not measured (needs the {needs})"
    elif not_here:
        verdict = not_here
    else:
        verdict = "met" if (value <= threshold if op == "<=" else value >= threshold) else "not met"
    shown = None if value is None else round(value, 2)
    return {"modality": modality, "goal": name, "op": op, "threshold": threshold, "value": shown, "verdict": verdict}


def render_goals(found: list[dict[str, Any]]) -> list[str]:
    rows = [[g["modality"], g["goal"], measured(g), f"{g['op']} {g['threshold']}", g["verdict"]] for g in found]
    title = "goals of the chosen path (the default one unless --backend/--precision say otherwise); not asserted"
    return ["", title, "", *markdown_table(["", "goal", "measured", "goal", "verdict"], rows)]


def measured(found: dict[str, Any]) -> str:
    if found["value"] is None:
        return ""
    return f"{found['value']}" + (f" (bests: {found['value_of_bests']})" if "value_of_bests" in found else "")


# --- text towers ------------------------------------------------------------------------------------------------


def time_text_backends(spec: ModelSpec, window: float, counts: tuple[int, ...] = (100, 1000)) -> list[dict[str, Any]]:
    """Label encoding: the torch text path as served (padding cut per length-sorted chunk) against open_clip's text
    tower converted to OpenVINO with a dynamic batch and length, fed the same cut chunks."""
    import torch

    from server.clip import TEXT_BATCH
    from server.openvino_backend import HINTS, _telemetry_declined, cpu_has_bf16, import_openvino

    openvino = import_openvino()
    encoder: Any = build_encoder(replace(spec, device="cpu", backend="torch", precision="fp32"))

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
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    compiled = {
        precision: openvino.Core().compile_model(converted, "CPU", {**config, "INFERENCE_PRECISION_HINT": hint})
        for precision, hint in HINTS.items()
        if precision == "fp32" or cpu_has_bf16()
    }

    def openvino_text(prompts: list[str], precision: str) -> np.ndarray:
        tokens = encoder.tokenizer(prompts)
        lengths = encoder._real_lengths(tokens)
        order = torch.argsort(lengths)
        out = np.empty((len(prompts), encoder.model.text_projection.shape[-1]), dtype=np.float32)
        for start in range(0, len(prompts), TEXT_BATCH):
            index = order[start : start + TEXT_BATCH]
            out[index.numpy()] = compiled[precision](tokens[index, : int(lengths[index].max())].numpy())[0]
        return out / np.linalg.norm(out, axis=-1, keepdims=True)

    rows = []
    for count in counts:
        prompts = [f"a photo of a {label}." for label in realistic_labels(count, salt=f"text-{count}")]
        row: dict[str, Any] = {"labels": count}
        row["torch_fp32_ms"] = round(min(timed(lambda p=prompts: encoder.encode_text(p), 3, window)), 1)
        reference = encoder.encode_text(prompts)
        for precision in compiled:
            row[f"openvino_{precision}_ms"] = round(min(timed(lambda p=prompts, q=precision: openvino_text(p, q), 3,
                                                              window)), 1)  # fmt: skip
            cosines = (openvino_text(prompts, precision) * reference).sum(-1)
            row[f"openvino_{precision}_min_cosine"] = round(float(cosines.min()), 6)
        rows.append(row)
    return rows


def render_text_backends(rows: list[dict[str, Any]]) -> list[str]:
    names = list(rows[0])
    table = markdown_table([n.replace("_", " ") for n in names], [[row.get(n, "") for n in names] for row in rows])
    return ["", "label encoding, torch against OpenVINO (best ms)", "", *table]
