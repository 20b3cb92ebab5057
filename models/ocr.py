"""Text in chat images (seed 000 "图像识别"): RapidOCR's PP-OCRv4 Chinese + English models,
shipped in the ``rapidocr-onnxruntime`` wheel and run with onnxruntime.

An image reference in ``chat.message`` ``payload.images`` is base64 (optionally a
``data:`` URL), a local path inside ``PORTRAIT_OCR_IMAGE_DIR`` (tests, batch imports), or
an http(s) URL, fetched only when ``PORTRAIT_OCR_FETCH_URLS`` is on, within
``PORTRAIT_OCR_MAX_IMAGE_BYTES`` and ``PORTRAIT_OCR_FETCH_TIMEOUT_SECONDS`` (the whole
fetch). An image past ``PORTRAIT_OCR_MAX_IMAGE_PIXELS`` is refused from its header,
before it is decoded. A reference that cannot be read or decoded raises
:class:`ImageError` with a reason code.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import ipaddress
import socket
import ssl
import time
import urllib.parse
import warnings
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
    max_pixels: int = 16_000_000
    image_dir: Path | None = None
    fetch_urls: bool = False
    fetch_timeout_seconds: float = 3.0
    allowed_hosts: frozenset[str] = frozenset()
    """Hosts fetched even though they resolve to a non-public address."""


def image_policy(settings: Settings) -> ImagePolicy:
    """Where chat images may be read from, and their size and time limits."""
    return ImagePolicy(
        max_bytes=settings.ocr_max_image_bytes,
        max_pixels=settings.ocr_max_image_pixels,
        image_dir=settings.ocr_image_dir,
        fetch_urls=settings.ocr_fetch_urls,
        fetch_timeout_seconds=settings.ocr_fetch_timeout_seconds,
        allowed_hosts=frozenset(host.lower() for host in settings.ocr_allowed_hosts),
    )


def _checked_address(url: str, policy: ImagePolicy) -> str:
    """The one address a URL's host is fetched from. Refused: a host that resolves to
    an address that is not public — private, loopback, link-local (cloud metadata at
    169.254.169.254), shared or reserved — unless the host is allowed (server-side
    request forgery: a chat image URL must not make the worker fetch from inside the
    network). The fetch connects to this very address: a second look-up could answer
    differently (DNS rebinding)."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if not host:
        raise ImageError("image_url_refused")
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise ImageError("image_fetch_failed") from exc
    addresses = [str(address[0]).split("%", 1)[0] for *_, address in found]
    if not addresses:
        raise ImageError("image_fetch_failed")
    if host not in policy.allowed_hosts and not all(
        ipaddress.ip_address(address).is_global for address in addresses
    ):
        raise ImageError("image_url_refused")
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to an address already checked, whatever the host name says."""

    def __init__(self, host: str, port: int | None, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.held: socket.socket

    def connect(self) -> None:
        self.sock = self.held = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As :class:`_PinnedHTTP`, over TLS; the certificate is checked against the host
    name."""

    def __init__(self, host: str, port: int | None, address: str, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address
        self.held: socket.socket

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.held = self.tls.wrap_socket(sock, server_hostname=self.host)


MAX_REDIRECTS = 3


def _fetch(url: str, policy: ImagePolicy) -> bytes:
    """GET an image URL within the policy: every hop's address checked and connected to
    as checked, at most :data:`MAX_REDIRECTS` redirects, and one deadline for the whole
    fetch (a server that trickles a byte at a time is cut off when it passes)."""
    deadline = time.monotonic() + policy.fetch_timeout_seconds
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ImageError("image_url_refused")
        address = _checked_address(url, policy)
        kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        connection = kind(parts.hostname or "", parts.port, address, _left(deadline))
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", target)
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                url = urllib.parse.urljoin(url, response.getheader("Location") or "")
                continue
            if response.status != 200:
                raise ImageError("image_fetch_failed")
            return _read_until(response, policy.max_bytes + 1, deadline, connection)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise ImageError("image_fetch_failed") from exc
        finally:
            connection.close()
    raise ImageError("image_fetch_failed")


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ImageError("image_fetch_failed")
    return left


def _read_until(
    response: http.client.HTTPResponse,
    limit: int,
    deadline: float,
    connection: _PinnedHTTP | _PinnedHTTPS,
) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        # the connection may have let go of its socket (a response that closes it), the
        # response still reads from it
        connection.held.settimeout(_left(deadline))
        chunk = response.read1(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def image_bytes(ref: str, policy: ImagePolicy) -> bytes:
    """The encoded image a reference points at, within the policy."""
    ref = ref.strip()
    if ref.startswith(("http://", "https://")):
        if not policy.fetch_urls:
            raise ImageError("image_url_disabled")
        data = _fetch(ref, policy)
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


READABLE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
"""The image formats read: each states its size in a header read before decoding."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an encoded image's header, without decoding its pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the size limit is ours (decode_image)
            with Image.open(io.BytesIO(data), formats=READABLE_FORMATS) as image:
                return image.size
    except Image.DecompressionBombError as exc:
        raise ImageError("image_too_many_pixels") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError("image_undecodable") from exc


def decode_image(data: bytes, max_pixels: int = 16_000_000) -> np.ndarray:
    """Pixels (BGR) of an encoded image, or :class:`ImageError`; refused before decoding
    past ``max_pixels`` (a 68 KB PNG can hold 24000 × 24000 pixels: 1.7 GB decoded)."""
    import cv2

    width, height = image_size(data)
    if width * height > max_pixels:
        raise ImageError("image_too_many_pixels")

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
