"""Reading and decoding images with errors that name the file or shard and key.

Every failure of one image is a ``SampleError`` (a counted skip), never a crash of the run: ``missing_image``,
``corrupt_image`` (unreadable, truncated, or any error PIL raises while decoding it), and ``image_too_large``
for images over PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``; PIL only *warns* between 1x and 2x
the limit and raises above, mmpeft skips both, so a tiny file cannot make a worker allocate gigabytes).
The same ``decode_image`` runs at conversion and at training-time decode.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from mmpeft.data.schema import SampleError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


def read_image_file(path: str | Path, where: str = "", verify: bool = True) -> tuple[bytes, str]:
    """The bytes and (lower-case) extension of an image file, fully decoded once to prove it is intact
    (``verify=False``: not decoded here, for readers that decode the bytes next anyway).

    Raises:
        SampleError: ``missing_image`` (no such file), ``corrupt_image`` (unreadable or truncated) or
            ``image_too_large`` (over PIL's decompression-bomb limit).
    """
    path = Path(path)
    if not path.is_file():
        raise SampleError("missing_image", f"image file {path} not found (check --image-root, or the image_root of "
                          "its data.sources entry)", where)
    ext = path.suffix.lower().lstrip(".") or "jpg"
    if ext not in IMAGE_EXTENSIONS:
        raise SampleError("corrupt_image", f"{path}: unsupported image extension {ext!r}", where)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SampleError("corrupt_image", f"image file {path} cannot be read: {e}", where) from e
    if verify:
        decode_image(data, where=f"{where} ({path})" if where else str(path))
    return data, ext


def decode_image(data: bytes, where: str = "") -> Image.Image:
    """Decode image bytes to an RGB PIL image; a bad image raises ``SampleError`` (see module docstring)."""
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only; PIL raises DecompressionBombError here
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and image.width * image.height > limit:  # PIL's warning range: decoding would go ahead
            raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels exceed PIL.Image.MAX_IMAGE_PIXELS"
                                               f" = {limit}")
        image.load()  # decode now: a truncated file fails here, not later in a worker
        return image.convert("RGB")
    except Image.DecompressionBombError as e:
        raise SampleError("image_too_large", f"image over PIL's decompression-bomb limit ({e}); resize it, or raise "
                          "PIL.Image.MAX_IMAGE_PIXELS if such images are expected", where) from e
    except Exception as e:  # noqa: BLE001 - PIL's decoders raise many types on bad bytes; each is one bad sample
        raise SampleError("corrupt_image", f"image cannot be decoded: {type(e).__name__}: {e}", where) from e
