"""Image references of chat commands and prompts files -> pixel tensors through the model's own transform.

A reference is a local path (relative paths resolve against a base directory: the prompts file's), a ``file://``
URL, or a ``data:image/...;base64,`` URL (OpenAI-style content parts). ``http(s)://`` URLs are refused: inference
never downloads. Decoding is ``mmpeft.data.images.decode_image``'s, with its decompression-bomb limit, so every
failure is a ``SampleError`` (``missing_image``, ``corrupt_image``, ``image_too_large``) naming where it came from.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import torch

from mmpeft.data.images import decode_image
from mmpeft.data.schema import SampleError


def image_bytes(reference: str, base_dir: str | Path | None = None, where: str = "") -> bytes:
    """The encoded bytes ``reference`` names (module docstring). Raises ``SampleError``."""
    if reference.startswith("data:"):
        header, sep, payload = reference.partition(",")
        if not sep or not header.endswith(";base64"):
            raise SampleError("corrupt_image", "a data: image URL must be data:image/<type>;base64,<data>", where)
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise SampleError("corrupt_image", f"the data: image URL is not valid base64 ({e})", where) from None
    scheme = urlparse(reference).scheme.lower()
    if scheme in ("http", "https", "ftp", "s3", "gs"):
        raise SampleError("missing_image", f"{reference!r}: remote images are not fetched (inference runs offline); "
                          "download the file and give its local path", where)
    path = Path(unquote(urlparse(reference).path)) if scheme == "file" else Path(reference).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise SampleError("missing_image", f"image file {path} not found" + (
            f" (relative paths resolve against {base_dir})" if base_dir is not None else ""), where)
    try:
        return path.read_bytes()
    except OSError as e:
        raise SampleError("corrupt_image", f"image file {path} cannot be read: {e}", where) from e


def load_image(reference: str, transform: Callable[[Any], torch.Tensor], base_dir: str | Path | None = None,
               where: str = "") -> torch.Tensor:
    """``[3, H, W]`` pixels of the image ``reference`` names, through ``transform`` (``vlm.vision.image_transform``).

    Raises:
        SampleError: the image is missing, remote, unreadable, undecodable or over the decompression-bomb limit.
    """
    where = f"{where} ({reference[:80]})" if where else reference[:80]
    return transform(decode_image(image_bytes(reference, base_dir, where), where))
