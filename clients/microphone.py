"""``sensorium mic``: stream a microphone, or a sound file, to the server.

python -m clients.microphone                   # the default input device
python -m clients.microphone --file speech.wav  # a file, in real time (--fast: as fast as answered)
python -m clients.microphone --events           # only a line when a label starts or ends
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .client import SensoriumClient
from .script import END_WAIT_S, add_common_arguments, client_from_args, print_messages, run_until_done
from .terminal import LivePrinter

PORTAUDIO_HINT = (
    "PortAudio is not installed: on Debian/Ubuntu `sudo apt install libportaudio2`, on Fedora "
    "`sudo dnf install portaudio`, on macOS `brew install portaudio` (or stream a file with --file)"
)


class AudioSourceError(RuntimeError):
    """A microphone or sound file that cannot be read."""


@dataclass(frozen=True)
class Chunk:
    pcm: bytes  # interleaved little-endian int16
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


def import_sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # the Python package is there, the PortAudio library is not
        raise AudioSourceError(PORTAUDIO_HINT) from exc
    return sounddevice


def check_readable(path: str) -> None:
    """Fail before connecting when the file cannot be read."""
    import soundfile

    try:
        soundfile.info(path)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise AudioSourceError(f"cannot read sound file {path}: {exc}") from exc


async def file_chunks(path: str, chunk_ms: int, realtime: bool) -> AsyncIterator[Chunk]:
    """A sound file in chunks of ``chunk_ms``, paced in real time unless ``realtime`` is off."""
    import soundfile

    try:
        sound = soundfile.SoundFile(path)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise AudioSourceError(f"cannot read sound file {path}: {exc}") from exc
    with sound:
        frames = max(1, sound.samplerate * chunk_ms // 1000)
        started = time.monotonic()
        sent = 0.0
        while True:
            block = sound.read(frames, dtype="int16", always_2d=True)
            if not len(block):
                return
            chunk = Chunk(block.astype("<i2").tobytes(), sound.samplerate, sound.channels)
            if realtime:
                await asyncio.sleep(max(0.0, started + sent - time.monotonic()))
            sent += chunk.seconds
            yield chunk


async def device_chunks(device: str | int | None, chunk_ms: int) -> AsyncIterator[Chunk]:
    """Live microphone chunks at the device's native rate, int16 mono."""
    sd = import_sounddevice()
    try:
        info = sd.query_devices(device, "input")
    except (ValueError, sd.PortAudioError) as exc:
        raise AudioSourceError(f"no input device {device!r}: {exc} (see --list-devices)") from exc
    rate = int(info["default_samplerate"])
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=50)

    def on_audio(indata: Any, frames: int, time_info: Any, status: Any) -> None:
        data = bytes(indata)
        loop.call_soon_threadsafe(_put_latest, queue, data)

    try:
        stream = sd.RawInputStream(
            samplerate=rate,
            blocksize=rate * chunk_ms // 1000,
            device=device,
            channels=1,
            dtype="int16",
            callback=on_audio,
        )
    except sd.PortAudioError as exc:
        raise AudioSourceError(f"cannot open input device {info['name']!r}: {exc}") from exc
    with stream:
        while True:
            yield Chunk(await queue.get(), rate, 1)


def _put_latest(queue: asyncio.Queue[bytes], data: bytes) -> None:
    if queue.full():  # never let a stalled connection build up old audio
        queue.get_nowait()
    queue.put_nowait(data)


async def stream_audio(args: argparse.Namespace, client: SensoriumClient, printer: LivePrinter) -> float:
    """Stream until the source ends or time is up; return the seconds of audio sent."""
    if args.file:
        check_readable(args.file)
        source = file_chunks(args.file, args.chunk_ms, realtime=not args.fast)
    else:
        import_sounddevice()
        source = device_chunks(_device(args.device), args.chunk_ms)
    await client.start()
    hop = float(client.welcome.get("limits", {}).get("audio_hop_seconds", 1.0))
    consumer = asyncio.create_task(print_messages(client, printer, events_only=args.events))
    started = time.monotonic()
    seconds = 0.0
    seq = 0

    def caught_up() -> bool:
        # The server resamples with a short delay, so the newest hop's result may still be owed.
        return client.ledger.results + client.ledger.dropped >= int(seconds / hop) - 1

    try:
        async for chunk in source:
            if args.duration and time.monotonic() - started >= args.duration:
                break
            if args.fast:
                # As fast as the server answers: stay at most about one window ahead of the results.
                await client.wait_until(caught_up, timeout=5)
            if await client.send_audio(chunk.pcm, seq, chunk.sample_rate, channels=chunk.channels, stream=args.stream):
                seq += 1
                seconds += chunk.seconds
        # No more audio: the server classifies the partial hop since its last window, then says ``ended``
        # once every window is answered. A server that predates ``end`` leaves the tail unclassified; then
        # wait for the full hops due.
        ended = seq > 0 and await client.end_stream("audio", args.stream)
        if not (ended and await client.wait_ended("audio", args.stream, timeout=END_WAIT_S)):
            await client.wait_until(caught_up, timeout=10)
    finally:
        await client.close()
        await consumer
        printer.finish()
    print(f"audio sent {seconds:.1f} s")
    return seconds


def _device(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.isdigit() else value


def list_devices() -> int:
    try:
        sd = import_sounddevice()
    except AudioSourceError as exc:
        print(f"sensorium mic: {exc}", file=sys.stderr)
        return 2
    print(sd.query_devices())
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", help="stream this sound file (WAV, FLAC, OGG, ...) instead of a microphone")
    parser.add_argument("--fast", action="store_true", help="with --file: as fast as the server answers")
    parser.add_argument("--device", help="input device index or name (default: the system's default input)")
    parser.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    parser.add_argument(
        "--chunk-ms",
        type=int,
        default=200,
        choices=range(100, 251),
        metavar="100-250",
        help="milliseconds of audio per message (default %(default)s)",
    )
    parser.add_argument("--stream", default="mic", help="stream name sent with each chunk (default %(default)s)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.list_devices:
        return list_devices()
    printer = LivePrinter(sys.stdout, live=True, err=sys.stderr)
    client = client_from_args(args, printer.status)
    return run_until_done("sensorium mic", stream_audio(args, client, printer), client, "chunks", (AudioSourceError,))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sensorium mic", description="Stream audio to a Sensorium server.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
