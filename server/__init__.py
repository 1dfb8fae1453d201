"""Sensorium: a live zero-shot perception server (CLIP for images, CLAP for audio)."""

__version__ = "0.1.0"
