"""Audio, Sans-I/O: PCM bytes to mono float samples, resampling, and sliding windows."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr

from .errors import ErrorCode, InputError

_SAMPLE_WIDTH = {"int16": 2, "float32": 4}
HOP_TOLERANCE = 1e-6  # of a hop: chunks of 0.1 s add up to 0.9999999 s, which is a hop


def decode_pcm(data: bytes, sample_rate: int, channels: int, dtype: str, max_seconds: float) -> np.ndarray:
    """Interleaved little-endian PCM (``dtype`` int16 or float32) to mono float32 in [-1, 1]."""
    if dtype not in _SAMPLE_WIDTH:
        raise InputError(ErrorCode.BAD_FIELD, f"'dtype' must be one of {', '.join(_SAMPLE_WIDTH)}, got {dtype!r}")
    frame_bytes = _SAMPLE_WIDTH[dtype] * channels
    if len(data) % frame_bytes:
        raise InputError(
            ErrorCode.BAD_AUDIO, f"{len(data)} bytes is not a whole number of {channels}-channel {dtype} frames"
        )
    frames = len(data) // frame_bytes
    if frames > max_seconds * sample_rate:
        raise InputError(
            ErrorCode.TOO_LARGE, f"the audio is {frames / sample_rate:.2f} s; the limit is {max_seconds:g} s"
        )
    if dtype == "int16":
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    else:
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.isfinite(samples).all():
            raise InputError(ErrorCode.BAD_AUDIO, "float32 audio contains NaN or infinity")
        np.clip(samples, -1.0, 1.0, out=samples)
    if channels > 1:
        samples = samples.reshape(frames, channels).mean(axis=1, dtype=np.float32)
    return samples


@dataclass(frozen=True)
class Window:
    """A stretch of audio due for classification."""

    samples: np.ndarray  # mono float32 at ``rate``
    rate: int
    seq: int  # of the newest chunk in the window
    ts: float
    skipped: int  # hops that passed without their own window (the chunk spanned several)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


class WindowBuffer:
    """Per-stream audio buffer at a fixed rate that emits a window every hop.

    Hops are counted in the time of the audio received, not in resampled samples: a resampler holds a few
    milliseconds back, and counting its output would leave a 1.0 s chunk short of a 1.0 s hop. Chunks may
    arrive at any rate; a streaming resampler keeps the phase across chunk boundaries, so a stream
    resampled chunk by chunk matches one resampled whole, and ``flush`` drains it at the stream's end.
    """

    def __init__(
        self, rate: int, window_s: float, hop_s: float, tap: Callable[[np.ndarray], None] | None = None
    ) -> None:
        self.rate = rate
        self.tap = tap  # sees every sample appended, in order: a streaming front end computes as audio arrives
        self.window_samples = round(window_s * rate)
        self.hop_s = hop_s
        self._buffer = np.zeros(0, dtype=np.float32)
        self._since_window_s = 0.0  # seconds of input received since the last window
        self._input_rate: int | None = None
        self._resampler: soxr.ResampleStream | None = None

    def push(self, samples: np.ndarray, sample_rate: int, seq: int, ts: float) -> Window | None:
        """Add mono samples at ``sample_rate``; return a window when a hop has passed."""
        self._append(self._resample(samples, sample_rate))
        self._since_window_s += len(samples) / sample_rate
        hops = int(self._since_window_s / self.hop_s + HOP_TOLERANCE)
        if hops == 0:
            return None
        self._since_window_s = max(0.0, self._since_window_s - hops * self.hop_s)
        return Window(samples=self._buffer.copy(), rate=self.rate, seq=seq, ts=ts, skipped=hops - 1)

    def flush(self, seq: int, ts: float) -> Window | None:
        """The stream ended: a window over the hop it had begun, if any audio came since the last window."""
        if self._resampler is not None:
            self._append(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            self._resampler = None
        if self._since_window_s <= HOP_TOLERANCE * self.hop_s or not len(self._buffer):
            return None
        self._since_window_s = 0.0
        return Window(samples=self._buffer.copy(), rate=self.rate, seq=seq, ts=ts, skipped=0)

    def _append(self, resampled: np.ndarray) -> None:
        if self.tap is not None and len(resampled):
            self.tap(resampled)
        self._buffer = np.concatenate([self._buffer, resampled])[-self.window_samples :]

    def _resample(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if sample_rate == self.rate:
            if self._resampler is not None:  # the rate changed back: what the resampler held comes first
                self._append(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            self._input_rate = sample_rate
            self._resampler = None
            return samples.astype(np.float32, copy=False)
        if self._resampler is None or self._input_rate != sample_rate:
            self._resampler = soxr.ResampleStream(sample_rate, self.rate, 1, dtype="float32", quality="HQ")
            self._input_rate = sample_rate
        out: np.ndarray = self._resampler.resample_chunk(samples.astype(np.float32, copy=False))
        return out


def rms_dbfs(samples: np.ndarray) -> float:
    """Loudness of float samples in [-1, 1] as RMS in dBFS (a full-scale sine is about -3; digital silence -inf)."""
    if not len(samples):
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def decode_sound_file(data: bytes) -> tuple[np.ndarray, int]:
    """A sound file (WAV, FLAC, OGG, ... whatever libsndfile reads) to mono float32 and its rate."""
    import io

    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        # libsndfile's message names the in-memory file object (``<_io.BytesIO object at 0x...>``): not for clients.
        reason = getattr(exc, "error_string", None) or "unrecognised format"
        raise InputError(
            ErrorCode.BAD_AUDIO, f"not a sound file libsndfile can read (WAV, FLAC, OGG): {reason}"
        ) from None
    if not len(samples):
        raise InputError(ErrorCode.BAD_AUDIO, "the sound file has no samples")
    mono: np.ndarray = samples.mean(axis=1, dtype=np.float32)
    return mono, int(rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return samples
    out: np.ndarray = soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)
    return out


def split_windows(samples: np.ndarray, rate: int, window_s: float) -> list[tuple[float, np.ndarray]]:
    """A whole clip as consecutive windows (start second, samples); a short tail joins the window before it."""
    size = round(window_s * rate)
    starts = list(range(0, max(len(samples), 1), size))
    if len(starts) > 1 and len(samples) - starts[-1] < rate // 2:
        starts.pop()
    bounds = [*starts[1:], len(samples)]
    return [(start / rate, samples[start:end]) for start, end in zip(starts, bounds, strict=True)]
