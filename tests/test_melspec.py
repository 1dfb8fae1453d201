"""server.melspec.MelStream against the stock ClapFeatureExtractor, and ClapEncoder.prepare with its features."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import ClapFeatureExtractor

from server.clap import ClapEncoder
from server.devmodels import LAION_FEATURES
from server.melspec import MelConfig, MelStream, NotStreamable, feature_shape, stream_for

RATE = 48000
HOP = 480  # STFT hop in samples
TOLERANCE_DB = 1e-4  # on the log-mel (dB); every step is the extractor's own, so it comes out bit-equal in practice


@pytest.fixture(scope="module")
def extractor() -> ClapFeatureExtractor:
    return ClapFeatureExtractor(**LAION_FEATURES)


def stock(extractor: ClapFeatureExtractor, window: np.ndarray) -> np.ndarray:
    out: np.ndarray = extractor(
        window, sampling_rate=RATE, truncation="rand_trunc", padding="repeatpad", return_tensors="np"
    )["input_features"][0]
    return out


def sound(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise, a gated tone, a click train and a stretch of exact silence: loud, quiet and -100 dB frames."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    audio = 0.05 * rng.standard_normal(n) + 0.4 * np.sin(2 * np.pi * 523.25 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    audio[:: RATE // 7] += 0.9
    audio[round(2.2 * RATE) : round(3.1 * RATE)] = 0.0
    return np.clip(audio, -1, 1).astype(np.float32)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape == (1, 1001, 64)
    assert got.dtype == np.float32
    assert float(np.abs(got - want).max()) <= TOLERANCE_DB


def chunks(audio: np.ndarray, size: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive chunks of ``size`` samples, the last one shorter."""
    return [(start, min(start + size, len(audio))) for start in range(0, len(audio), size)]


@pytest.mark.parametrize(
    "window_s",
    [0.005, 0.3, 1.0, 2.5, 5.0, 10.0, 47999 / RATE, 123457 / RATE],
    ids=["5ms", "0.3s", "1s", "2.5s", "5s", "10s", "1s-1", "2.57s"],
)
def test_windows_match_the_stock_extractor(extractor: ClapFeatureExtractor, window_s: float) -> None:
    """A 13 s stream in 0.23 s chunks, checked at every hop: growing windows, full ones, old frames dropping out."""
    window = round(window_s * RATE)
    audio = sound(13.0)
    stream = MelStream.from_extractor(extractor, "rand_trunc", window)
    since_hop, checked = 0, 0
    for start, end in chunks(audio, round(0.23 * RATE)):
        stream.push(audio[start:end])
        since_hop += end - start
        if since_hop >= RATE or end == len(audio):
            since_hop -= RATE
            length = min(window, stream.total)
            assert_same(stream.features(length), stock(extractor, audio[end - length : end]))
            checked += 1
    assert checked >= 13


def test_arbitrary_chunks_and_lag(extractor: ClapFeatureExtractor) -> None:
    """Chunks of any size put the window off the frame grid: still equal; ``lag`` puts it back on the grid."""
    rng = np.random.default_rng(1)
    audio = sound(9.0, seed=2)
    window = 5 * RATE
    stream = MelStream.from_extractor(extractor, "rand_trunc", window)
    start = 0
    while start < len(audio):
        end = min(len(audio), start + int(rng.integers(1, 7000)))
        stream.push(audio[start:end])
        start = end
        if rng.random() < 0.08:
            length = min(window, end)
            assert_same(stream.features(length), stock(extractor, audio[end - length : end]))
            lag = end % HOP
            length = min(window, end - lag)
            assert_same(stream.features(length, lag=lag), stock(extractor, audio[end - lag - length : end - lag]))
            if length == window:
                assert stream.last_computed == 7  # on the grid: only the padding-dependent frames


def test_only_new_frames_are_computed(extractor: ClapFeatureExtractor) -> None:
    """With 48 kHz audio in 10 ms multiples, each hop costs its own 100 frames plus 7 padding frames."""
    audio = sound(12.0, seed=3)
    stream = MelStream.from_extractor(extractor, "rand_trunc", 5 * RATE)
    per_hop = []
    for second in range(12):
        before = stream.frames_computed
        for start in range(second * RATE, (second + 1) * RATE, round(0.2 * RATE)):
            stream.push(audio[start : start + round(0.2 * RATE)])
        features = stream.features(min(5 * RATE, stream.total))
        per_hop.append(stream.frames_computed - before)
        end = stream.total
        assert_same(features, stock(extractor, audio[end - min(5 * RATE, end) : end]))
    assert stream.last_computed == 7
    assert per_hop[6:] == [107] * 6, per_hop  # steady state: 100 new frames and 7 at tile edges and ends


@pytest.mark.parametrize("padding", ["repeat", "pad"])
def test_other_padding_modes(padding: str) -> None:
    extractor = ClapFeatureExtractor(**{**LAION_FEATURES, "padding": padding})
    audio = sound(6.0, seed=4)
    stream = MelStream.from_extractor(extractor, "rand_trunc")
    stream.push(audio)
    for length in (1000, RATE, 123457, 5 * RATE, 6 * RATE):
        want = extractor(audio[-length:], sampling_rate=RATE, truncation="rand_trunc", return_tensors="np")
        assert_same(stream.features(length), want["input_features"][0])


def test_silence_and_one_large_push(extractor: ClapFeatureExtractor) -> None:
    stream = MelStream.from_extractor(extractor, "rand_trunc", 5 * RATE)
    stream.push(np.zeros(2 * RATE, dtype=np.float32))
    assert_same(stream.features(RATE), stock(extractor, np.zeros(RATE, dtype=np.float32)))
    audio = sound(15.0, seed=5)
    stream.push(audio)  # more than the stream holds, in one go
    assert_same(stream.features(5 * RATE), stock(extractor, audio[-5 * RATE :]))
    stream.push(audio[:777])
    joined = np.concatenate([audio, audio[:777]])
    assert_same(stream.features(5 * RATE), stock(extractor, joined[-5 * RATE :]))


def test_limits_and_fallbacks(extractor: ClapFeatureExtractor) -> None:
    assert feature_shape(extractor) == (1, 1001, 64)
    assert MelConfig.from_extractor(extractor, "rand_trunc").feature_shape == (1, 1001, 64)
    # Fused checkpoints: four channels and a random is_longer per batch; the stock extractor does it.
    assert stream_for(extractor, "fusion") is None
    with pytest.raises(NotStreamable):
        MelConfig.from_extractor(extractor, "fusion")
    # Past max_length (10 s) rand_trunc takes a random crop: not streamable.
    assert stream_for(extractor, "rand_trunc", 10 * RATE + 1) is None
    with pytest.raises(ValueError):
        MelStream.from_extractor(extractor, "rand_trunc", 10 * RATE + 1)
    stream = stream_for(extractor, "rand_trunc", 5 * RATE)
    assert stream is not None
    stream.push(sound(6.0))
    with pytest.raises(ValueError):
        stream.features(5 * RATE + 1)  # longer than the stream was made for
    with pytest.raises(ValueError):
        stream.features(0)
    with pytest.raises(ValueError):
        MelStream.from_extractor(extractor, "rand_trunc").features(10)  # nothing received yet


def test_prepare_takes_features_in_place_of_windows(audio_model: str) -> None:
    encoder = ClapEncoder.load(audio_model, "cpu")
    stream = encoder.mel_stream(5 * RATE)
    assert stream is not None
    audio = sound(7.0, seed=6)
    for start in range(0, len(audio), 11040):
        stream.push(audio[start : start + 11040])
    window = audio[-5 * RATE :]
    short = audio[: round(1.7 * RATE)]
    features = stream.features(5 * RATE)

    from_window = encoder.prepare([window])
    from_features = encoder.prepare([features])
    assert set(from_features) == set(from_window) == {"input_features", "is_longer"}
    assert from_features["input_features"].shape == from_window["input_features"].shape
    assert from_features["is_longer"].dtype == from_window["is_longer"].dtype
    assert float((from_features["input_features"] - from_window["input_features"]).abs().max()) <= TOLERANCE_DB
    want = encoder.encode(from_window)
    got = encoder.encode(from_features)
    assert float((want * got).sum()) >= 0.9999

    # A batch mixing raw windows and features keeps its order.
    mixed = encoder.encode(encoder.prepare([short, features, window]))
    alone = encoder.encode(encoder.prepare([short, window, window]))
    assert np.allclose(mixed, alone, atol=1e-5)
    with pytest.raises(ValueError):
        encoder.prepare([features[:, :500]])
