"""Text in chat images (seed 000 "图像识别"): RapidOCR's PP-OCRv4 Chinese + English models,
shipped in the ``rapidocr-onnxruntime`` wheel and run with onnxruntime.

An image reference in ``chat.message`` ``payload.images`` is base64 (optionally a
``data:`` URL), a local path inside ``PORTRAIT_OCR_IMAGE_DIR`` (tests, batch imports), or
an http(s) URL, fetched only when ``PORTRAIT_OCR_FETCH_URLS`` is on, within
``PORTRAIT_OCR_MAX_IMAGE_BYTES`` and ``PORTRAIT_OCR_FETCH_TIMEOUT_SECONDS``. A reference
that cannot be read or decoded raises :class:`ImageError` with a reason code.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from portrait.config import Settings


class ImageError(Exception):
    """An image reference that yields no image; ``str()`` is a stable reason code."""


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    """Where images may come from, and how big they may be."""

    max_bytes: int = 5_000_000
    image_dir: Path | None = None
    fetch_urls: bool = False
    fetch_timeout_seconds: float = 3.0
    allowed_hosts: frozenset[str] = frozenset()
    """Hosts fetched even though they resolve to a non-public address."""


def image_policy(settings: Settings) -> ImagePolicy:
    """Where chat images may be read from, and their size and time limits."""
    return ImagePolicy(
        max_bytes=settings.ocr_max_image_bytes,
        image_dir=settings.ocr_image_dir,
        fetch_urls=settings.ocr_fetch_urls,
        fetch_timeout_seconds=settings.ocr_fetch_timeout_seconds,
        allowed_hosts=frozenset(host.lower() for host in settings.ocr_allowed_hosts),
    )


def _check_host(url: str, policy: ImagePolicy) -> None:
    """Refuse a URL whose host resolves to an address that is not public — private,
    loopback, link-local (cloud metadata at 169.254.169.254), shared or reserved —
    unless the host is allowed (server-side request forgery: a chat image URL must not
    make the worker fetch from inside the network)."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if not host:
        raise ImageError("image_url_refused")
    if host in policy.allowed_hosts:
        return
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise ImageError("image_fetch_failed") from exc
    for *_, address in found:
        if not ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_global:
            raise ImageError("image_url_refused")


def _opener(policy: ImagePolicy) -> urllib.request.OpenerDirector:
    """An opener whose redirects are checked like the first URL."""

    class CheckedRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(
            self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
        ) -> Any:
            _check_host(newurl, policy)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(CheckedRedirects)


def image_bytes(ref: str, policy: ImagePolicy) -> bytes:
    """The encoded image a reference points at, within the policy."""
    ref = ref.strip()
    if ref.startswith(("http://", "https://")):
        if not policy.fetch_urls:
            raise ImageError("image_url_disabled")
        _check_host(ref, policy)
        try:
            opener = _opener(policy)
            with opener.open(ref, timeout=policy.fetch_timeout_seconds) as response:
                data = bytes(response.read(policy.max_bytes + 1))
        except ImageError:
            raise
        except (OSError, ValueError) as exc:
            raise ImageError("image_fetch_failed") from exc
    elif not ref.startswith("data:") and ("." in ref or ref.startswith("/")):
        # a path ("." never occurs in base64): only inside the configured image directory
        if policy.image_dir is None or len(ref) > 1024:
            raise ImageError("image_path_refused")
        root = policy.image_dir.resolve()
        path = (root / ref).resolve()
        if root not in path.parents or not path.is_file():
            raise ImageError("image_path_refused")
        data = path.read_bytes()[: policy.max_bytes + 1]
    else:
        payload = ref.split(",", 1)[1] if ref.startswith("data:") else ref
        if len(payload) > policy.max_bytes * 4 // 3 + 4:
            raise ImageError("image_too_large")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError("image_undecodable") from exc
    if len(data) > policy.max_bytes:
        raise ImageError("image_too_large")
    return data


def decode_image(data: bytes) -> np.ndarray:
    """Pixels (BGR) of an encoded image, or :class:`ImageError`."""
    import cv2

    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if pixels is None or pixels.size == 0:
        raise ImageError("image_undecodable")
    return np.asarray(pixels)


class TextReader:
    """Images → their text, one line per detected text box, top to bottom."""

    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        # one thread per session, as every model in the worker (one process per core)
        self._ocr: Any = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)

    def read(self, images: list[np.ndarray]) -> list[str]:
        texts = []
        for pixels in images:
            result, _ = self._ocr(pixels)
            boxes = result or []
            # top-left corner: by row (y, in steps of 10 px), then by x
            boxes = sorted(boxes, key=lambda box: (round(box[0][0][1] / 10), box[0][0][0]))
            texts.append("\n".join(str(box[1]) for box in boxes))
        return texts
