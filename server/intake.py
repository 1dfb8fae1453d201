"""A stream's inputs on their way to the model: decoding, audio windows and their features, silence, thumbnails.

Each function here runs off the event loop (the session awaits it with ``asyncio.to_thread``) and off the
model's thread, which meanwhile encodes the inputs before this one. The session's receive loop awaits each
message in turn, so a stream's state is never touched by two of these at once.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .audio import Window, WindowBuffer, decode_pcm, rms_dbfs
from .imaging import decode_image
from .protocol import AudioChunk, End, Frame
from .settings import Settings
from .streams import StreamState
from .timing import ms_since

if TYPE_CHECKING:
    from .session import Serving

THUMBNAIL_WIDTH = 160


@dataclass(frozen=True)
class TakenFrame:
    image: Any  # preprocessed for the model
    decoded: float  # perf_counter when decoding ended
    preprocess_ms: float
    thumbnail: tuple[int, int, bytes] | None  # width, height, JPEG


@dataclass(frozen=True)
class TakenAudio:
    window: Window | None  # None until a hop has passed
    payload: Any  # what goes to the model: mel features, or samples
    features_ms: float
    at: float  # the stream's clock at the window's end: seconds of audio received
    silent: bool  # quieter than --silence-dbfs: not for the model


class Intake:
    def __init__(self, settings: Settings, serving: Serving) -> None:
        self.settings = settings
        self.serving = serving

    def frame(self, message: Frame, want_thumbnail: bool) -> TakenFrame:
        image = decode_image(
            message.data,
            message.format,
            self.settings.max_image_pixels,
            self.serving.image_side,
            width=message.width,
            height=message.height,
            pixel_format=message.pixel_format,
        )
        decoded = time.perf_counter()
        prepare = self.serving.prepare_one.get("image")
        prepared = image if prepare is None else prepare(image)
        preprocess_ms = ms_since(decoded)
        return TakenFrame(prepared, decoded, preprocess_ms, thumbnail_of(image) if want_thumbnail else None)

    def audio(self, state: StreamState, message: AudioChunk) -> TakenAudio:
        samples = decode_pcm(
            message.data, message.sample_rate, message.channels, message.dtype, self.settings.max_audio_chunk_seconds
        )
        state.audio_seconds += len(samples) / message.sample_rate
        window = self._buffer(state).push(samples, message.sample_rate, message.seq, message.ts)
        return self._taken(state, window, on_grid=True)

    def tail(self, state: StreamState, message: End) -> TakenAudio:
        """The stream ended: the window over the hop it had begun, if any."""
        assert state.audio is not None
        tail = state.audio.flush(message.seq if message.seq is not None else -1, time.time())
        return self._taken(state, tail, on_grid=False)

    def _taken(self, state: StreamState, window: Window | None, on_grid: bool) -> TakenAudio:
        if window is None:
            return TakenAudio(None, None, 0.0, state.audio_seconds, False)
        threshold = self.settings.silence_dbfs
        silent = threshold is not None and rms_dbfs(window.samples[-self._hop_samples(window) :]) < threshold
        # Features are computed even for a silent window: the streaming front end's frames must stay in step.
        payload, features_ms = self._front_end(state, window, on_grid)
        return TakenAudio(window, payload, features_ms, state.audio_seconds, silent)

    def _hop_samples(self, window: Window) -> int:
        """The new audio of a window: the hop (silence is judged on what is new, not on the whole window)."""
        return max(1, round(self.settings.audio_hop * window.rate))

    def _buffer(self, state: StreamState) -> WindowBuffer:
        if state.audio is None:
            settings = self.settings
            state.audio = WindowBuffer(self.serving.audio_rate, settings.audio_window, settings.audio_hop)
            if self.serving.mel_stream is not None:
                state.mel = self.serving.mel_stream(state.audio.window_samples)
                state.audio.tap = state.mel.push if state.mel is not None else None
        return state.audio

    def _front_end(self, state: StreamState, window: Window, on_grid: bool) -> tuple[Any, float]:
        """What goes to the model for a window: its mel features where the model has a streaming front end
        (only the new audio's frames are computed), else the samples; and the time that took."""
        started = time.perf_counter()
        if state.mel is None:
            prepare = self.serving.prepare_one.get("audio")
            payload = window.samples if prepare is None else prepare(window.samples)
            return payload, ms_since(started)
        length, lag = len(window.samples), 0
        if on_grid:
            # Ending the window on the front end's frame grid (< 10 ms early) keeps it to the new frames only.
            lag = state.mel.total % state.mel.config.hop_length
            length = min(length, state.mel.total - lag)
        features = state.mel.features(length, lag=lag)
        return features, ms_since(started)


def thumbnail_of(image: np.ndarray) -> tuple[int, int, bytes]:
    """A small JPEG of an RGB picture, for watchers."""
    picture = Image.fromarray(image)
    height = max(1, round(picture.height * THUMBNAIL_WIDTH / max(1, picture.width)))
    picture = picture.resize((THUMBNAIL_WIDTH, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=70)
    return picture.width, picture.height, out.getvalue()
