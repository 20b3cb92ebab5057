"""Images the tests draw themselves: business cards with known facts."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


def _font(size: int) -> ImageFont.FreeTypeFont:
    # Noto Sans CJK from the `cvttf-notosanscjk-regular` wheel (a dev dependency): the
    # system has no font with Chinese glyphs
    import cvttf_NotoSansCJK_Regular as noto

    return ImageFont.truetype(str(Path(noto.__file__).parent / "NotoSansCJKtc-Regular.otf"), size)


def card_png(lines: list[tuple[str, int]], size: tuple[int, int] = (900, 520)) -> bytes:
    """A white card with black text lines (text, pixel size), top to bottom, as PNG."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    y = 40
    for text, pixels in lines:
        draw.text((50, y), text, fill="black", font=_font(pixels))
        y += pixels + 30
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


ZH_CARD = [
    ("王小明", 48),
    ("销售总监", 30),
    ("杭州阿里巴巴网络技术有限公司", 34),
    ("手机 138 1234 5678", 30),
    ("wxm@alibaba.com", 30),
]
EN_CARD = [
    ("Sarah Connor", 48),
    ("Head of Security", 30),
    ("Cyberdyne Systems Inc", 34),
    ("+1 415 555 0100", 30),
    ("sarah.connor@cyberdyne.com", 30),
]


def card_b64(lines: list[tuple[str, int]]) -> str:
    return base64.b64encode(card_png(lines)).decode()
