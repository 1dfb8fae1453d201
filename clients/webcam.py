"""``sensorium webcam``: stream a camera, a video file or a stream URL to the server.

python -m clients.webcam --source 0            # the first camera, with a preview window
python -m clients.webcam --source clip.mp4 --headless
python -m clients.webcam --source clip.mp4 --headless --events   # only a line when a label starts or ends
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .client import SensoriumClient
from .messages import Result
from .script import END_WAIT_S, add_common_arguments, client_from_args, print_messages, run_until_done
from .terminal import LivePrinter, has_display


class SourceError(RuntimeError):
    """A camera, file or URL that cannot be read."""


def open_capture(source: str) -> Any:
    """An OpenCV capture for a camera index, a video file or a stream URL."""
    import cv2

    if source.isdigit():
        capture = cv2.VideoCapture(int(source))
        if not capture.isOpened():
            raise SourceError(f"no camera at index {source} (is one connected? try another --source index)")
        return capture
    if "://" not in source and not Path(source).is_file():
        raise SourceError(f"video file not found: {source}")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        kind = "stream" if "://" in source else "video file"
        raise SourceError(f"cannot read {kind} {source} (not a video OpenCV can decode?)")
    return capture


def encode_jpeg(frame: np.ndarray, max_side: int, quality: int) -> bytes:
    """Resize a BGR frame so its longer side is at most ``max_side``, then JPEG-encode it."""
    import cv2

    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale < 1:
        frame = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SourceError("OpenCV could not encode the frame as JPEG")
    return bytes(encoded)


class Preview:
    """A window showing the latest frame with the latest result drawn on it."""

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        self.result: Result | None = None
        self.closed = False

    def show_result(self, result: Result) -> None:
        self.result = result  # drawn with the next frame

    def show(self, frame: np.ndarray) -> None:
        cv2 = self.cv2
        canvas = frame.copy()
        if self.result is not None:
            lines = [f"{t.label}  {t.score:.2f}  (cos {t.similarity:.3f})" for t in self.result.top]
            rt = self.result.round_trip_ms
            lines.append(f"round trip {rt:.0f} ms" if rt is not None else "")
            for i, line in enumerate(lines):
                y = 24 + 22 * i
                cv2.putText(canvas, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(canvas, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.imshow("sensorium", canvas)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.closed = True


async def stream_video(args: argparse.Namespace, client: SensoriumClient, printer: LivePrinter) -> None:
    capture = open_capture(str(args.source))
    preview = None if args.headless else Preview()
    await client.start()
    shown = None if preview is None else preview.show_result
    consumer = asyncio.create_task(print_messages(client, printer, events_only=args.events, show_result=shown))
    started = time.monotonic()
    seq = 0
    try:
        while not (preview and preview.closed):
            if args.duration and time.monotonic() - started >= args.duration:
                break
            if args.frames and seq >= args.frames:
                break
            await client.wait_for_slot("image", args.stream, args.inflight)
            ok, frame = await asyncio.to_thread(capture.read)
            if not ok:
                if str(args.source).isdigit():
                    printer.status("the camera stopped delivering frames")
                break
            data = await asyncio.to_thread(encode_jpeg, frame, args.max_side, args.quality)
            if await client.send_frame(data, seq, stream=args.stream):
                seq += 1
            if preview is not None:
                preview.show(frame)
            if args.fps:
                await asyncio.sleep(max(0.0, started + seq / args.fps - time.monotonic()))
        # No more frames: say so, and let the last ones in flight come back before summing up. The server's
        # ``ended`` clears the stream's books (frames whose results never came count as dropped).
        if seq > 0:
            await client.end_stream("image", args.stream)
        await client.wait_until(lambda: client.ledger.in_flight("image", args.stream) == 0, timeout=END_WAIT_S)
    finally:
        capture.release()
        await client.close()
        await consumer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="0", help="camera index, video file, or stream URL (default %(default)s)")
    parser.add_argument("--stream", default="camera", help="stream name sent with each frame (default %(default)s)")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality (default %(default)s)")
    parser.add_argument("--max-side", type=int, default=640, help="resize so the longer side is at most this")
    parser.add_argument("--inflight", type=int, default=2, help="most frames awaiting a result (default %(default)s)")
    parser.add_argument("--fps", type=float, default=0, help="cap on frames per second (default: no cap)")
    parser.add_argument("--headless", action="store_true", help="no preview window: print one line per result")
    add_common_arguments(parser)
    parser.add_argument("--frames", type=int, default=0, help="stop after sending this many frames")


def run(args: argparse.Namespace) -> int:
    if not args.headless and not has_display():
        print("sensorium webcam: no display for the preview window; running --headless", file=sys.stderr)
        args.headless = True
    printer = LivePrinter(sys.stdout, live=False, err=sys.stderr)
    client = client_from_args(args, printer.status)
    return run_until_done("sensorium webcam", stream_video(args, client, printer), client, "frames", (SourceError,))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sensorium webcam", description="Stream video to a Sensorium server.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
