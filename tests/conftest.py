"""Shared fixtures: small random-weight models written through the real formats, and live servers.

Helpers that tests import live in tests/helpers.py; this file holds only fixtures.
"""

from __future__ import annotations

import os
import tempfile

# Before anything imports huggingface_hub: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenVINO conversions of the test models go to a folder of this run, not the user's cache.
os.environ["SENSORIUM_OV_CACHE"] = tempfile.mkdtemp(prefix="sensorium-ov-")

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.devmodels import write_clap, write_open_clip
from server.settings import Settings

from .helpers import REPO, LiveServer, live_server


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_open_clip(root / "image")
    write_clap(root / "audio")
    return root


@pytest.fixture(scope="session")
def image_model(models_dir: Path) -> str:
    return f"local-dir:{models_dir / 'image'}"


@pytest.fixture(scope="session")
def audio_model(models_dir: Path) -> str:
    return str(models_dir / "audio")


@pytest.fixture
def label_dir(tmp_path: Path) -> Path:
    """Private copies of the shipped label files, free to edit."""
    out = tmp_path / "labels"
    out.mkdir()
    for name in ("image.txt", "audio.txt"):
        shutil.copy(REPO / "labels" / name, out / name)
    return out


@pytest.fixture
def settings(image_model: str, audio_model: str, label_dir: Path) -> Settings:
    return Settings(
        image_model=image_model,
        audio_model=audio_model,
        image_labels=label_dir / "image.txt",
        audio_labels=label_dir / "audio.txt",
        reload_debounce_ms=100,
        label_cache=str(label_dir.parent / "label-cache"),
        backend="torch",  # the backends are compared in test_openvino.py; "auto" is run by the CLI tests
        data_dir=str(label_dir.parent / "data"),  # the event log of this test, never the user's
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    with live_server(settings) as running:
        yield running
