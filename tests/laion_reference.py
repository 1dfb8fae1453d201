"""laion_clap's side of the checkpoint equivalence test (tests/test_laion_clap.py); runs in .venv-laion.

Not a test module: the main environment cannot import laion_clap (it needs numpy<2), so test_laion_clap.py runs
this script in the separate environment that ``.ci/laion-env`` builds, with HF_HOME pointing at a hub cache whose
``roberta-base`` (and the ``bert-base-uncased`` and ``facebook/bart-base`` tokenizers laion_clap loads on import)
are small random stand-ins. For each case it uses laion_clap's own code to:

1. build a model (``CLAP_Module``) and give every trained weight and BatchNorm statistic random values, so that a
   key mapped to the wrong place cannot go unnoticed (laion's own init leaves LayerNorms at 1 and biases at 0);
2. write a checkpoint as laion_clap's training loop does (``{"epoch", "name", "state_dict", "optimizer"}``, keys
   prefixed ``module.`` by DistributedDataParallel, the learning rate a numpy scalar from its cosine schedule)
   plus the ``text_branch.embeddings.position_ids`` buffer that transformers<4.31 saved and the released
   checkpoints carry (laion_clap's ``load_state_dict`` deletes it, and fails when it is missing);
3. scramble the model's weights again, load the file back with ``CLAP_Module.load_ckpt`` and compute
   ``get_audio_embedding_from_data`` (one clip per call: a fused model takes a batch-dependent path) and
   ``get_text_embedding`` on the inputs it is given.

Inputs (in --work): ``waveforms.npz`` (1-D float32 arrays at 48 kHz, none over 10 s, so laion crops nothing at
random) and ``prompts.json``. Outputs, per case, in ``--work/CASE/``: ``checkpoint.pt``, ``audio.npy``,
``text.npy`` and ``inputs.npz``, the samples laion_clap actually embedded (it rounds audio through int16).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

SEED = 1234


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random values for every trained tensor and BatchNorm statistic (not the frozen STFT and mel buffers)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue  # torchlibrosa's STFT kernels and mel filterbank: fixed by the audio settings
            noise = torch.randn(parameter.shape, generator=generator)
            if name.startswith("logit_scale"):
                parameter.add_(0.5 * noise)
            elif parameter.ndim == 1:  # biases, LayerNorm and BatchNorm scales and shifts
                parameter.add_(0.1 * noise)
            else:
                parameter.add_(0.02 * noise)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.2 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))


def write_checkpoint(clap: torch.nn.Module, path: Path, name: str) -> None:
    from laion_clap.training.scheduler import cosine_lr

    state_dict = {f"module.{key}": value for key, value in clap.state_dict().items()}
    state_dict["module.text_branch.embeddings.position_ids"] = torch.arange(514).unsqueeze(0)
    optimizer = torch.optim.AdamW(clap.parameters(), lr=1e-4)
    cosine_lr(optimizer, 1e-4, 10, 100)(50)  # sets param_groups' lr to a numpy float64, as training leaves it
    checkpoint = {"epoch": 45, "name": name, "state_dict": state_dict, "optimizer": optimizer.state_dict()}
    torch.save(checkpoint, path)


def run_case(case: str, amodel: str, fusion: bool, work: Path) -> None:
    import laion_clap
    from laion_clap.training.data import float32_to_int16, int16_to_float32

    out = work / case
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(SEED)
    clap = laion_clap.CLAP_Module(enable_fusion=fusion, amodel=amodel, device="cpu")
    randomize(clap.model, SEED)
    write_checkpoint(clap.model, out / "checkpoint.pt", f"{case}-random")
    # Other values everywhere, then the file's: what is embedded below comes from the file alone (load_ckpt
    # loads strictly: every weight and persistent buffer of the model).
    randomize(clap.model, SEED + 1)
    clap.load_ckpt(str(out / "checkpoint.pt"), verbose=False)

    waveforms = np.load(work / "waveforms.npz")
    names = sorted(waveforms.files)
    with torch.no_grad():
        audio = np.concatenate([clap.get_audio_embedding_from_data([waveforms[key]]) for key in names])
        prompts = json.loads((work / "prompts.json").read_text())
        text = clap.get_text_embedding(prompts)
    embedded = {key: int16_to_float32(float32_to_int16(waveforms[key])) for key in names}
    np.savez(out / "inputs.npz", **embedded)
    np.save(out / "audio.npy", audio.astype(np.float32))
    np.save(out / "text.npy", text.astype(np.float32))
    print(f"{case}: {amodel} fusion={fusion} in {time.perf_counter() - started:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--case", action="append", required=True, help="NAME:AMODEL:fused|unfused")
    args = parser.parse_args()
    for spec in args.case:
        case, amodel, kind = spec.split(":")
        run_case(case, amodel, kind == "fused", args.work)


if __name__ == "__main__":
    main()
