"""Which loader a model string goes to, from its spelling alone (server.encoders.model_family)."""

import pytest

from server.encoders import ModelSpec, build_encoder, model_family


@pytest.mark.parametrize(
    ("modality", "model", "family"),
    [
        ("image", "ViT-B-32", "open_clip"),
        ("image", "ViT-B-16-SigLIP", "open_clip"),
        ("image", "hf-hub:timm/ViT-B-16-SigLIP", "open_clip"),
        ("image", "local-dir:/nowhere", "open_clip"),
        ("image", "openai/clip-vit-base-patch32", "transformers"),
        ("image", "google/siglip-base-patch16-224", "transformers"),
        ("audio", "laion/clap-htsat-unfused", "clap"),
        ("audio", "/models/630k-audioset-best.pt", "laion_clap"),
        ("audio", "laion-clap:music_audioset_epoch_15_esc_90.14.pt", "laion_clap"),
    ],
)
def test_family_from_spelling(modality, model, family):
    assert model_family(modality, model) == family


def test_a_folder_is_told_by_its_files(tmp_path):
    (tmp_path / "oc").mkdir()
    (tmp_path / "oc" / "open_clip_config.json").write_text("{}")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert model_family("image", str(tmp_path / "oc")) == "open_clip"
    assert model_family("image", str(tmp_path / "hf")) == "transformers"


def test_an_unknown_backend_names_the_family():
    with pytest.raises(ValueError, match="no 'onnx' backend for open_clip image models"):
        build_encoder(ModelSpec("image", "ViT-B-32", backend="onnx"))
