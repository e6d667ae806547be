"""Reading and decoding images with errors that name the file or shard and key."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmpeft.data.schema import SampleError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


def read_image_file(path: str | Path, where: str = "") -> tuple[bytes, str]:
    """The bytes and (lower-case) extension of an image file, fully decoded once to prove it is intact.

    Raises:
        SampleError: ``missing_image`` (no such file) or ``corrupt_image`` (unreadable or truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise SampleError("missing_image", f"image file {path} not found (check --image-root)", where)
    data = path.read_bytes()
    decode_image(data, where=f"{where} ({path})" if where else str(path))
    ext = path.suffix.lower().lstrip(".") or "jpg"
    if ext not in IMAGE_EXTENSIONS:
        raise SampleError("corrupt_image", f"{path}: unsupported image extension {ext!r}", where)
    return data, ext


def decode_image(data: bytes, where: str = "") -> Image.Image:
    """Decode image bytes to an RGB PIL image; truncated or corrupt data raises ``SampleError``."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decode now: a truncated file fails here, not later in a worker
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise SampleError("corrupt_image", f"image cannot be decoded: {e}", where) from e
