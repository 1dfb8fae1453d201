"""Streaming CLAP audio front end, Sans-I/O: samples in, CLAP ``input_features`` out (numpy only).

``ClapFeatureExtractor`` (``truncation="rand_trunc"``, the unfused checkpoints' path) turns a window of
``L <= max_length`` samples at 48 kHz into one log-mel spectrogram of a fixed 10 s signal ``x``:

* ``x`` is the window repeat-padded to ``M = max_length`` samples: ``padding="repeatpad"`` tiles it
  ``M // L`` times and zero-pads the rest; ``"repeat"`` tiles it and cuts at ``M``; anything else zero-pads;
* a centred STFT of ``x``: ``x`` is reflect-padded by ``n_fft // 2`` on both sides, frame ``f`` covers
  ``x[f * hop - n_fft // 2 : f * hop - n_fft // 2 + n_fft]`` (``1 + M // hop`` frames: 1001), times a
  periodic Hann window, ``rfft`` in float64 whose result is stored as complex64, power ``|X|**2`` in
  float64, the slaney mel bank (``mel_filters_slaney``), a floor of 1e-10, ``10 * log10`` and float32.
  Every step is per frame (``top_db`` is not applied by the extractor), so a frame's column depends only on
  the 1024 samples under it.

A frame that lies inside one tile copy of the window is a frame of the window itself, that is of the
stream, at a known stream position; only frames that straddle a tile boundary, the start or end of ``x``
(reflection) or the end of the tiled part, and frames entirely in the zero tail (a constant), depend on the
padding. ``MelStream`` therefore computes the stream's frames once, as audio arrives (``push``, in batches
of at least 8 frames; ``features`` computes what is left), on a fixed grid of stream positions (multiples
of ``hop`` from the stream's first sample), and ``features`` assembles the 1001 columns: grid frames are
copied from a ring of mel columns, the few padding-dependent frames (7 for a 5 s window: 2 at the start,
3 across the tile boundary, 2 at the end) are computed from the retained samples, the zero tail is filled
with its constant, and tile copies reuse the window's own columns. When the
window's start is not on the grid (the window's end is not a multiple of ``hop`` samples from the stream's
start: chunks of arbitrary sizes, resampled input), the window's own frames are computed at once too (still
one batched FFT, several times cheaper than the stock extractor). ``features(..., lag=total % hop)``
keeps a window on the grid by leaving its newest ``< hop`` samples (under 10 ms) to the next window.

Limits, where the caller must use the stock extractor on the raw window instead:

* windows longer than the extractor's ``max_length`` (10 s for laion): ``rand_trunc`` takes a random
  crop of them (and ``is_longer`` becomes true), which is neither streamable nor deterministic;
* ``truncation="fusion"`` (fused checkpoints): four channels of the htk mel bank, and the extractor
  randomly marks one item of each batch ``is_longer``; not implemented here (``stream_for`` gives None).

Each step is the extractor's own (same window, float64 FFT rounded to complex64, float64 power and mel
projection, float32 result), so the features come out bit-equal in practice; the mel projection's float64
summation order may differ from the extractor's single large product, which can flip the last bit of a
float32 value (under 1e-5 dB). A MelStream is not thread-safe: push and features from one thread at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MEL_FLOOR = 1e-10  # spectrogram(mel_floor=1e-10), as ClapFeatureExtractor leaves it
DB_MIN = 1e-10  # power_to_db(min_value=1e-10)
DB_REFERENCE = 1.0  # power_to_db(reference=1.0)
_BLOCK = 256  # STFT frames per batched FFT
_PUSH_BATCH = 8  # push computes frames once this many are complete (features catches up on the rest)
# The mel projection goes in row blocks small enough (m * n * k <= 262144) that OpenBLAS runs them on the calling
# thread: when torch keeps every core busy, waking BLAS threads for these small products stalls for milliseconds.
_BLAS_SINGLE_THREAD_MNK = 262144


class NotStreamable(ValueError):
    """The extractor's configuration has no streaming equivalent here; use the stock extractor."""


@dataclass(frozen=True, eq=False)
class MelConfig:
    """What ClapFeatureExtractor's unfused path computes, taken from a real extractor object."""

    sampling_rate: int
    n_fft: int
    hop_length: int
    max_samples: int  # the extractor's max_length in samples: every window is padded to it
    mel_filters: np.ndarray  # (n_fft // 2 + 1, n_mels) float64: mel_filters_slaney
    padding: str  # "repeatpad", "repeat", or anything else for zero padding

    def __post_init__(self) -> None:
        if self.hop_length < 1 or self.n_fft < 2 or self.max_samples <= self.n_fft:
            raise NotStreamable(
                f"unsupported STFT settings: n_fft {self.n_fft}, hop {self.hop_length}, max {self.max_samples}"
            )
        if self.mel_filters.shape[0] != self.n_fft // 2 + 1:
            raise NotStreamable(f"mel filters of shape {self.mel_filters.shape} do not fit n_fft {self.n_fft}")

    @classmethod
    def from_extractor(cls, extractor: Any, truncation: str | None = None) -> MelConfig:
        """From a ``ClapFeatureExtractor`` (a checkpoint's own processor config is honoured)."""
        truncation = truncation if truncation is not None else extractor.truncation
        if truncation == "fusion":
            raise NotStreamable("truncation='fusion' (fused checkpoints) is not streamed: use the stock extractor")
        return cls(
            sampling_rate=int(extractor.sampling_rate),
            n_fft=int(extractor.fft_window_size),
            hop_length=int(extractor.hop_length),
            max_samples=int(extractor.nb_max_samples),
            mel_filters=np.asarray(extractor.mel_filters_slaney, dtype=np.float64),
            padding=str(extractor.padding),
        )

    @property
    def n_mels(self) -> int:
        return int(self.mel_filters.shape[1])

    @property
    def n_frames(self) -> int:
        half = self.n_fft // 2
        return 1 + (self.max_samples + 2 * half - self.n_fft) // self.hop_length

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """One item's ``input_features``: (1, frames, n_mels), as the extractor gives it."""
        return (1, self.n_frames, self.n_mels)


def feature_shape(extractor: Any) -> tuple[int, int, int]:
    """The per-item ``input_features`` shape of an unfused extractor: (1, 1001, 64) for laion's."""
    n_fft, hop = int(extractor.fft_window_size), int(extractor.hop_length)
    n_frames = 1 + (int(extractor.nb_max_samples) + 2 * (n_fft // 2) - n_fft) // hop
    return (1, n_frames, int(extractor.feature_size))


def stream_for(
    extractor: Any, truncation: str | None = None, max_window_samples: int | None = None
) -> MelStream | None:
    """A MelStream for this extractor, or None where the streaming path does not apply (see the module doc)."""
    try:
        config = MelConfig.from_extractor(extractor, truncation)
    except NotStreamable:
        return None
    if max_window_samples is not None and max_window_samples > config.max_samples:
        return None
    return MelStream(config, max_window_samples)


class MelStream:
    """One audio stream's CLAP mel features, computed as its samples arrive.

    ``push`` appends mono float32 samples at ``config.sampling_rate`` (any chunk size) and computes the STFT
    frames they complete; ``features(window_samples)`` gives what ``ClapFeatureExtractor`` gives for the
    last ``window_samples`` samples (``input_features[0]``: (1, 1001, 64) float32 for laion's settings).
    Holds ``max_window_samples + hop`` samples and the mel columns over them.
    """

    def __init__(self, config: MelConfig, max_window_samples: int | None = None) -> None:
        limit = config.max_samples if max_window_samples is None else int(max_window_samples)
        if not 0 < limit <= config.max_samples:
            raise ValueError(
                f"max_window_samples must be in 1..{config.max_samples} (the extractor's max length), got {limit}"
            )
        self.config = config
        self.max_window_samples = limit
        self._hop = config.hop_length
        self._nfft = config.n_fft
        self._half = config.n_fft // 2
        self._window = np.hanning(config.n_fft + 1)[:-1]  # window_function(n_fft, "hann"): periodic
        self._retain = limit + self._hop  # samples kept: the longest window, plus room for ``lag``
        self._buf = np.zeros(self._retain + max(self._retain // 4, 4 * config.n_fft), dtype=np.float32)
        self._n = 0  # valid samples in _buf; _buf[0] is stream sample total - _n
        self.total = 0  # samples pushed so far
        # Mel columns of the stream's frames centred on multiples of hop, in a ring indexed by frame number.
        self._ring_frames = self._retain // self._hop + 4
        self._mel = np.zeros((self._ring_frames, config.n_mels), dtype=np.float32)
        self._next = -(-self._half // self._hop)  # first frame whose samples all lie in the stream
        self._lowest = self._next  # lowest frame number ever computed and still meaningful
        centres = np.arange(config.n_frames, dtype=np.int64) * self._hop
        self._lo = centres - self._half  # first sample of each output frame in the padded signal
        self._hi = self._lo + self._nfft
        band = np.flatnonzero(config.mel_filters.any(axis=1))
        low, high = (int(band[0]), int(band[-1]) + 1) if len(band) else (0, 1)
        self._band = slice(low, high)  # the FFT bins any mel filter uses: the others are exact zeros
        self._filters = np.ascontiguousarray(config.mel_filters[low:high])
        self._mel_rows = max(1, _BLAS_SINGLE_THREAD_MNK // ((high - low) * config.n_mels))
        self._zero_column = self._log_mel(np.zeros((1, self._nfft)))[0]
        self.frames_computed = 0  # STFT frames computed so far, by push and features together
        self.last_computed = 0  # STFT frames computed by the last features() call

    @classmethod
    def from_extractor(
        cls, extractor: Any, truncation: str | None = None, max_window_samples: int | None = None
    ) -> MelStream:
        return cls(MelConfig.from_extractor(extractor, truncation), max_window_samples)

    # -- input ------------------------------------------------------------------------------------

    def push(self, samples: np.ndarray) -> None:
        """Append mono samples (float32 at the extractor's rate) and compute the frames they complete."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        m = len(x)
        if not m:
            return
        if m >= self._retain:
            self._buf[: self._retain] = x[m - self._retain :]
            self._n = self._retain
        else:
            if self._n + m > len(self._buf):
                keep = min(self._n, self._retain - m)
                self._buf[:keep] = self._buf[self._n - keep : self._n].copy()
                self._n = keep
            self._buf[self._n : self._n + m] = x
            self._n += m
        self.total += m
        self._advance(_PUSH_BATCH)

    def _advance(self, at_least: int = 1) -> None:
        """Compute the frames whose samples have all arrived, if there are ``at_least`` of them."""
        hop, half = self._hop, self._half
        base = self.total - self._n
        first = -(-(base + half) // hop)  # frames starting before the retained samples are gone for good
        if first > self._next:
            self._next = self._lowest = first
        end = (self.total - self._nfft + half) // hop + 1  # frames up to here have all their samples
        if end - self._next < at_least:
            return
        view = np.lib.stride_tricks.sliding_window_view(self._buf[: self._n], self._nfft)
        for start in range(self._next, end, _BLOCK):
            stop = min(end, start + _BLOCK)
            offset = start * hop - half - base
            frames = view[offset : offset + (stop - start - 1) * hop + 1 : hop]
            columns = self._log_mel(frames)
            self._mel[np.arange(start, stop) % self._ring_frames] = columns
        self.frames_computed += end - self._next
        self._next = end

    # -- output -----------------------------------------------------------------------------------

    def features(self, window_samples: int, lag: int = 0) -> np.ndarray:
        """``input_features`` for the window ending ``lag`` samples before the newest: (1, frames, n_mels).

        Equal (to float32 rounding) to ``ClapFeatureExtractor(window, truncation="rand_trunc")`` for one item.
        """
        cfg = self.config
        length, lag = int(window_samples), int(lag)
        if length < 1 or lag < 0:
            raise ValueError(f"need window_samples >= 1 and lag >= 0, got {length} and {lag}")
        if length > self.max_window_samples:
            raise ValueError(f"a window of {length} samples is longer than this stream's {self.max_window_samples}")
        self._advance()
        end = self.total - lag
        start = end - length
        base = self.total - self._n
        if start < max(base, 0):
            raise ValueError(
                f"a window of {length} samples {lag} before the end reaches audio not held (or not received)"
            )
        limit, hop, half = cfg.max_samples, self._hop, self._half
        if length >= limit:
            content = limit
        elif cfg.padding == "repeatpad":
            content = (limit // length) * length
        elif cfg.padding == "repeat":
            content = limit
        else:
            content = length
        lo, hi = self._lo, self._hi
        tile = np.maximum(lo, 0) // length
        interior = (lo >= 0) & (hi <= content) & (hi <= (tile + 1) * length)
        zero = (lo >= content) & (hi <= limit)
        centre = start + lo + half - tile * length  # the stream position of an interior frame's centre
        frame_no = centre // hop
        lowest = max(self._lowest, self._next - self._ring_frames)
        cached = interior & (centre % hop == 0) & (frame_no >= lowest) & (frame_no < self._next)

        out = np.empty((cfg.n_frames, cfg.n_mels), dtype=np.float32)
        out[cached] = self._mel[frame_no[cached] % self._ring_frames]
        out[zero] = self._zero_column
        todo_interior = np.flatnonzero(interior & ~cached)
        todo_edge = np.flatnonzero(~(interior | cached | zero))
        # Tile copies of one window share their frames: compute each stream position once.
        positions, inverse = np.unique(centre[todo_interior], return_inverse=True)
        self.last_computed = len(positions) + len(todo_edge)
        self.frames_computed += self.last_computed
        if len(positions):
            view = np.lib.stride_tricks.sliding_window_view(self._buf[: self._n], self._nfft)
            starts = positions - half - base
            columns = np.concatenate([self._log_mel(view[block]) for block in _blocks(starts)])
            out[todo_interior] = columns[inverse.reshape(-1)]
        if len(todo_edge):
            window = self._buf[start - base : end - base]
            edges = [self._log_mel(self._padded_frames(window, lo[block], content)) for block in _blocks(todo_edge)]
            out[todo_edge] = np.concatenate(edges)
        return out[None]

    def _padded_frames(self, window: np.ndarray, starts: np.ndarray, content: int) -> np.ndarray:
        """Frames of the padded signal starting at ``starts``, reflection at both ends included."""
        limit = self.config.max_samples
        p = starts[:, None] + np.arange(self._nfft)
        p = np.where(p < 0, -p, p)
        p = np.where(p >= limit, 2 * (limit - 1) - p, p)
        values: np.ndarray = np.where(p < content, window[p % len(window)], np.float32(0)).astype(np.float64)
        return values

    def _log_mel(self, frames: np.ndarray) -> np.ndarray:
        """(k, n_fft) samples to (k, n_mels) float32 log-mel columns, step for step as the extractor does."""
        spectrum = np.fft.rfft(frames.astype(np.float64) * self._window, axis=-1).astype(np.complex64)
        power = np.abs(spectrum[:, self._band], dtype=np.float64) ** 2.0
        rows = self._mel_rows
        projected = np.concatenate([power[i : i + rows] @ self._filters for i in range(0, len(power), rows)])
        mel = np.maximum(MEL_FLOOR, projected)
        db = 10.0 * (np.log10(np.clip(mel, DB_MIN, None)) - np.log10(max(DB_MIN, DB_REFERENCE)))
        return db.astype(np.float32)


def _blocks(index: np.ndarray) -> list[np.ndarray]:
    return [index[i : i + _BLOCK] for i in range(0, len(index), _BLOCK)]
