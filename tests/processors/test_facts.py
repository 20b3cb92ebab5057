"""Fact extraction from text and OCR'd cards, and where chat images may come from."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import pytest

from models.entities import ChineseEntities, EnglishEntities
from models.ocr import (
    ImageError,
    ImagePolicy,
    TextReader,
    decode_image,
    image_bytes,
    image_size,
)
from processors.facts import Fact, FactExtractor, best_per_attribute, birthdays, phones
from tests.support.images import EN_CARD, ZH_CARD, card_png


@pytest.fixture(scope="module")
def extractor() -> FactExtractor:
    return FactExtractor(ChineseEntities(), EnglishEntities())


def facts(found: list[Fact]) -> dict[str, str]:
    return {fact.name: fact.value for fact in found}


def test_chinese_self_introduction(extractor: FactExtractor) -> None:
    [found] = extractor.extract(
        ["我叫王小明，在杭州阿里巴巴网络技术有限公司上班，手机138-1234-5678，邮箱 WXM@Example.com"]
    )
    assert facts(found) == {
        "name": "王小明",
        "company": "杭州阿里巴巴网络技术有限公司",
        "phone": "13812345678",
        "email": "wxm@example.com",
        "city": "杭州",
    }
    confidence = {f.name: f.confidence for f in found}
    assert confidence["phone"] > confidence["name"] > confidence["city"]


def test_english_self_introduction(extractor: FactExtractor) -> None:
    [found] = extractor.extract(
        [
            "Hi, my name is John Smith and I work at Acme Holdings Ltd. I live in Manchester. "
            "Born on 3 May 1990, call me on +44 7700 900123"
        ]
    )
    assert facts(found) == {
        "name": "John Smith",
        "company": "Acme Holdings Ltd",
        "city": "Manchester",
        "birthday": "1990-05-03",
        "phone": "447700900123",
    }


def test_birthdays_and_products_and_cities(extractor: FactExtractor) -> None:
    [zh, en, neither] = extractor.extract(
        [
            "我是张伟，生日是1990年5月3日，住在上海，想装屋顶光伏",
            "My birthday is March 4th, 1985 and I'd like a smart meter",
            "你们太差劲了，我要投诉",
        ]
    )
    assert facts(zh) == {
        "name": "张伟",
        "birthday": "1990-05-03",
        "city": "上海",
        "product_interest": "solar_rooftop",
    }
    assert facts(en) == {"birthday": "1985-03-04", "product_interest": "smart_meter"}
    assert neither == []


def test_a_name_about_someone_else_is_not_the_customers(extractor: FactExtractor) -> None:
    [found] = extractor.extract(["李师傅昨天来修过了，但是王经理说还要再来一次"])
    assert "name" not in facts(found)


def test_facts_in_other_phrasings(extractor: FactExtractor) -> None:
    found = extractor.extract(
        [
            "我的邮箱改成了liuyang@163.com，麻烦更新一下",
            "我1990年3月5日出生，是不是有生日优惠",
            "You can reach me on 07700 900456 or at j.brown@mail.co.uk",
            "本人赵敏，来自成都，想咨询充电桩",
        ]
    )
    assert [facts(f) for f in found] == [
        {"email": "liuyang@163.com"},
        {"birthday": "1990-03-05"},
        {"phone": "07700900456", "email": "j.brown@mail.co.uk"},
        {"name": "赵敏", "city": "成都", "product_interest": "ev_charger"},
    ]


def test_rules_reject_what_only_looks_like_a_fact() -> None:
    assert phones("订单号 20261122000123456，金额 12.50") == []
    assert phones("call 010-12345678 or +86 139 0000 1111") == ["13900001111", "01012345678"]
    assert birthdays("生日是1990年2月30日") == []  # no such day
    assert birthdays("the meeting is on 3 May 2026") == []  # no birthday cue


def test_most_confident_fact_per_attribute() -> None:
    low, high = Fact("city", "上海", 0.6), Fact("city", "北京", 0.8)
    assert best_per_attribute([low, high, Fact("city", "杭州", 0.8)]) == [high]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ZH_CARD,
            {
                "name": "王小明",
                "company": "杭州阿里巴巴网络技术有限公司",
                "phone": "13812345678",
                "email": "wxm@alibaba.com",
                "city": "杭州",
            },
        ),
        (
            EN_CARD,
            {
                "name": "Sarah Connor",
                "company": "Cyberdyne Systems Inc",
                "phone": "14155550100",
                "email": "sarah.connor@cyberdyne.com",
            },
        ),
    ],
)
def test_business_card_through_ocr(
    extractor: FactExtractor, lines: list[tuple[str, int]], expected: dict[str, str]
) -> None:
    [text] = TextReader().read([decode_image(card_png(lines))])
    [found] = extractor.extract([text], card=True)
    assert facts(found) == expected


def test_image_references_follow_the_policy(tmp_path: Path) -> None:
    png = card_png([("hello", 30)], size=(200, 100))
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "a.png").write_bytes(png)
    (tmp_path / "secret.txt").write_text("not for OCR")
    policy = ImagePolicy(max_bytes=len(png) + 10, image_dir=tmp_path / "cards")
    assert image_bytes(base64.b64encode(png).decode(), policy) == png
    assert image_bytes("data:image/png;base64," + base64.b64encode(png).decode(), policy) == png
    assert image_bytes(str(tmp_path / "cards" / "a.png"), policy) == png
    refused = {
        "not base64 at all!": "image_undecodable",
        str(tmp_path / "secret.txt"): "image_path_refused",
        "cards/../secret.txt": "image_path_refused",
        "https://example.invalid/card.png": "image_url_disabled",
        base64.b64encode(png + b"x" * 20).decode(): "image_too_large",
    }
    for ref, reason in refused.items():
        with pytest.raises(ImageError, match=reason):
            image_bytes(ref, policy)
    with pytest.raises(ImageError, match="image_undecodable"):
        decode_image(b"GIF89a but not really")
    with pytest.raises(ImageError, match="image_path_refused"):
        image_bytes(str(tmp_path / "cards" / "a.png"), ImagePolicy())  # no image dir


def test_urls_are_fetched_only_when_enabled_and_within_limits() -> None:
    import http.server
    import threading

    png = card_png([("hello", 30)], size=(200, 100))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/redirect.png":  # to another host name of this machine
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/card.png")
                self.end_headers()
                return
            if self.path == "/slow.png":
                threading.Event().wait(2.0)
            body = png if self.path != "/big.png" else png * 10
            self.send_response(200 if self.path != "/missing.png" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    public_only = ImagePolicy(max_bytes=len(png) * 2, fetch_urls=True)
    policy = replace(public_only, fetch_timeout_seconds=0.5, allowed_hosts=frozenset({"127.0.0.1"}))
    try:
        # loopback, private, link-local (cloud metadata) hosts: refused unless allowed
        for url in (f"{base}/card.png", "http://10.0.0.7/a.png", "http://169.254.169.254/x"):
            with pytest.raises(ImageError, match="image_url_refused"):
                image_bytes(url, public_only)
        assert image_bytes(f"{base}/card.png", policy) == png
        with pytest.raises(ImageError, match="image_url_refused"):  # redirects are checked
            image_bytes(f"{base}/redirect.png", policy)
        for path, reason in [
            ("/big.png", "image_too_large"),
            ("/missing.png", "image_fetch_failed"),
            ("/slow.png", "image_fetch_failed"),
        ]:
            with pytest.raises(ImageError, match=reason):
                image_bytes(base + path, policy)
        with pytest.raises(ImageError, match="image_url_disabled"):
            image_bytes(f"{base}/card.png", ImagePolicy())
    finally:
        server.shutdown()


def bomb_png(side: int = 24000) -> bytes:
    """A PNG of side × side one-bit pixels, all white: about 70 KB on disk, 1.7 GB as the
    BGR pixels a decoder would make of it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_an_image_past_the_pixel_limit_is_refused_before_it_is_decoded() -> None:
    import resource

    bomb = bomb_png()
    assert len(bomb) < 128_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="image_too_many_pixels"):
        decode_image(bomb, max_pixels=16_000_000)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024  # nothing near the 1.7 GB of its pixels
    small = card_png([("hello", 30)], size=(200, 100))
    assert image_size(small) == (200, 100)
    assert decode_image(small, max_pixels=200 * 100).shape[:2] == (100, 200)
    with pytest.raises(ImageError, match="image_too_many_pixels"):
        decode_image(small, max_pixels=200 * 100 - 1)
    with pytest.raises(ImageError, match="image_undecodable"):  # no size, no decoding
        decode_image(b"P6\n24000 24000\n255\n" + b"\0" * 100)


def test_a_fetch_connects_to_the_address_it_checked_and_has_one_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import http.server
    import socket
    import threading

    png = card_png([("hello", 30)], size=(200, 100))
    hosts: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            if self.path == "/trickle.png":  # each byte within a read timeout, never done
                for byte in png[:40]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    threading.Event().wait(0.1)
            self.wfile.write(png)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: str, *args: object, **kwargs: object) -> object:
        # the first answer for the name is the one checked; a later look-up of it would
        # get an inside address
        if host != "pictures.test":
            return real(host, *args, **kwargs)  # type: ignore[arg-type]
        looked_up.append(host)
        address = "127.0.0.1" if len(looked_up) == 1 else "10.9.9.9"
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    policy = ImagePolicy(
        max_bytes=len(png) * 2,
        fetch_urls=True,
        fetch_timeout_seconds=1.0,
        allowed_hosts=frozenset({"pictures.test"}),
    )
    try:
        assert image_bytes(f"http://pictures.test:{port}/card.png", policy) == png
        assert looked_up == ["pictures.test"] and hosts == [f"pictures.test:{port}"]
        looked_up.clear()
        with pytest.raises(ImageError, match="image_fetch_failed"):
            image_bytes(
                f"http://pictures.test:{port}/trickle.png",
                replace(policy, fetch_timeout_seconds=0.5),
            )
    finally:
        server.shutdown()
