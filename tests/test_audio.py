import numpy as np
import pytest

from server.audio import WindowBuffer, decode_pcm
from server.errors import ErrorCode, InputError

from .helpers import int16_pcm, tone


def chunk(data: bytes, channels: int = 1, dtype: str = "int16", rate: int = 16000) -> dict:
    return {"data": data, "sample_rate": rate, "channels": channels, "dtype": dtype}


def test_int16_to_float():
    samples = decode_pcm(**chunk(np.array([0, 16384, -32768], dtype="<i2").tobytes()), max_seconds=10)
    np.testing.assert_allclose(samples, [0.0, 0.5, -1.0])
    assert samples.dtype == np.float32


def test_stereo_is_downmixed():
    stereo = np.array([[0.5, -0.5], [0.25, 0.75]], dtype="<f4").tobytes()
    np.testing.assert_allclose(decode_pcm(**chunk(stereo, channels=2, dtype="float32"), max_seconds=10), [0.0, 0.5])


@pytest.mark.parametrize(
    ("data", "dtype", "channels", "code"),
    [
        (b"\0\0\0", "int16", 1, ErrorCode.BAD_AUDIO),
        (b"\0\0\0\0\0\0", "int16", 2, ErrorCode.BAD_AUDIO),
        (np.array([np.nan], dtype="<f4").tobytes(), "float32", 1, ErrorCode.BAD_AUDIO),
        (np.array([np.inf], dtype="<f4").tobytes(), "float32", 1, ErrorCode.BAD_AUDIO),
        (b"\0\0" * 16001, "int16", 1, ErrorCode.TOO_LARGE),
    ],
)
def test_bad_pcm(data, dtype, channels, code):
    with pytest.raises(InputError) as info:
        decode_pcm(**chunk(data, channels, dtype), max_seconds=1.0)
    assert info.value.code == code


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def test_1khz_tone_at_16khz_still_peaks_at_1khz_at_48khz():
    buffer = WindowBuffer(48000, window_s=2.0, hop_s=1.0)
    source = tone(1000, 3.0, 16000)
    windows = []
    for i, start in enumerate(range(0, len(source), 1600)):  # 100 ms chunks, resampled chunk by chunk
        pcm = decode_pcm(**chunk(int16_pcm(source[start : start + 1600])), max_seconds=10)
        window = buffer.push(pcm, 16000, seq=i, ts=0.0)
        if window is not None:
            windows.append(window)
    last = windows[-1]
    assert last.rate == 48000 and len(last.samples) == 96000
    assert abs(peak_hz(last.samples, 48000) - 1000) < 2
    # chunked resampling is continuous: no clicks at chunk joins, so the tone keeps its level
    steady = last.samples[1000:-1000]
    assert 0.28 < np.abs(steady).max() < 0.32


def test_first_window_after_one_hop_then_every_hop():
    buffer = WindowBuffer(48000, window_s=5.0, hop_s=1.0)
    emitted = [buffer.push(np.zeros(12000, np.float32), 48000, seq=i, ts=float(i)) for i in range(12)]
    positions = [i for i, w in enumerate(emitted) if w is not None]
    assert positions == [3, 7, 11]
    first = emitted[3]
    assert first is not None and first.seconds == 1.0 and first.seq == 3 and first.skipped == 0


def test_window_is_capped_and_long_chunks_count_skipped_hops():
    buffer = WindowBuffer(48000, window_s=2.0, hop_s=0.5)
    window = buffer.push(np.ones(48000 * 3, np.float32), 48000, seq=1, ts=0.0)
    assert window is not None
    assert window.seconds == 2.0
    assert window.skipped == 5  # six hops passed, one window came out


def test_sample_rate_change_mid_stream():
    buffer = WindowBuffer(48000, window_s=2.0, hop_s=1.0)
    assert buffer.push(tone(440, 0.5, 16000), 16000, 1, 0.0) is None
    window = buffer.push(tone(440, 0.6, 44100), 44100, 2, 0.0)
    assert window is not None and window.seq == 2


def test_a_one_second_chunk_at_44k_is_one_hop():
    # Hops count input time: the HQ resampler holds samples back, which once left this chunk without a result.
    buffer = WindowBuffer(48000, window_s=5.0, hop_s=1.0)
    window = buffer.push(tone(440, 1.0, 44100), 44100, seq=0, ts=0.0)
    assert window is not None and window.skipped == 0
    assert 0.9 < window.seconds <= 1.0


def test_three_seconds_in_chunks_give_three_windows_and_flush_classifies_the_tail():
    buffer = WindowBuffer(48000, window_s=5.0, hop_s=1.0)
    source = tone(440, 3.5, 44100)
    windows = [buffer.push(source[i : i + 4410], 44100, i, 0.0) for i in range(0, len(source), 4410)]
    assert sum(w is not None for w in windows[:30]) == 3  # 3.0 s: three hops
    assert all(w is None for w in windows[30:])  # the last half second is a hop begun
    tail = buffer.flush(seq=99, ts=0.0)
    assert tail is not None and tail.seq == 99
    assert abs(tail.seconds - 3.5) < 0.01  # the resampler's held-back samples are drained too
    assert buffer.flush(seq=100, ts=0.0) is None  # nothing new since


def test_flush_after_a_whole_hop_gives_nothing():
    buffer = WindowBuffer(48000, window_s=5.0, hop_s=1.0)
    assert buffer.push(np.zeros(48000, np.float32), 48000, 0, 0.0) is not None
    assert buffer.flush(1, 0.0) is None
