import numpy as np
import pytest

from server.errors import ErrorCode, InputError
from server.imaging import decode_image

from .helpers import jpeg


def make(data: bytes, fmt: str = "jpeg", **geometry) -> dict:
    """Plain decoder fields, as the session and the HTTP API pass them."""
    return {"data": data, "fmt": fmt, **geometry}


def decode(fields: dict, max_pixels: int, min_side: int | None = None):
    fields = dict(fields)
    return decode_image(fields.pop("data"), fields.pop("fmt"), max_pixels, min_side, **fields)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_encoded_formats(fmt):
    image = decode(make(jpeg((10, 200, 30), (64, 48), fmt), fmt.lower()), 10**6)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    r, g, b = image[24, 32]
    assert g > 150 and r < 60 and b < 80


def test_raw_bgr_is_flipped_to_rgb():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    image = decode(make(bgr.tobytes(), "raw", width=3, height=2, pixel_format="bgr24"), 100)
    assert tuple(image[0, 0]) == (0, 0, 255)


def expect(frame: dict, code: str, max_pixels: int = 10**6) -> str:
    with pytest.raises(InputError) as info:
        decode(frame, max_pixels)
    assert info.value.code == code
    return info.value.message


def test_bad_images():
    good = jpeg(size=(64, 48))
    expect(make(good[: len(good) // 2]), ErrorCode.BAD_IMAGE)
    expect(make(b"not an image at all"), ErrorCode.BAD_IMAGE)
    assert "png" in expect(make(good, "png"), ErrorCode.BAD_IMAGE)
    expect(make(b"\0" * 10, "raw", width=3, height=2, pixel_format="rgb24"), ErrorCode.BAD_IMAGE)


def test_pixel_limit_checked_from_header():
    message = expect(make(jpeg(size=(400, 300))), ErrorCode.TOO_LARGE, max_pixels=100_000)
    assert "400x300" in message
    expect(make(b"\0" * 12, "raw", width=2000, height=2000, pixel_format="rgb24"), ErrorCode.TOO_LARGE)


def test_large_jpegs_decode_at_reduced_scale_but_never_below_twice_the_model_input():
    big = jpeg((90, 120, 150), (1920, 1080))
    assert decode(make(big), 10**8).shape == (1080, 1920, 3)
    assert decode(make(big), 10**8, min_side=224).shape == (540, 960, 3)  # 1/2: 540 >= 448
    assert decode(make(big), 10**8, min_side=64).shape == (135, 240, 3)  # 1/8
    small = jpeg(size=(640, 480))
    assert decode(make(small), 10**8, min_side=224).shape == (480, 640, 3)
    png = jpeg(size=(1920, 1080), fmt="PNG")
    assert decode(make(png, "png"), 10**8, min_side=64).shape == (1080, 1920, 3)  # only JPEG scales
