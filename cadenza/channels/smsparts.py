"""How many SMS segments a text costs, and in which encoding (GSM 03.38 or UCS-2).

A text made only of the GSM 7-bit alphabet travels as GSM-7: 160 septets fit one message;
longer texts are split into parts of 153 septets (7 go to the concatenation header). The
characters of the extension table (`^{}\\[~]|€` and form feed) are an escape plus a character:
two septets each, and a part never ends between the two. Any other character makes the whole
text UCS-2, counted in UTF-16 code units: 70 fit one message, parts hold 67, and a part never
ends inside a surrogate pair (an emoji is two units and stays whole).

Carriers bill per segment, so the counts here are what a message costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The GSM 03.38 basic character set (one septet each; the escape code itself excluded)."""
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")
"""Characters reached through the escape code: two septets each."""

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class SmsParts:
    """What a text costs as SMS."""

    encoding: Encoding
    units: int
    """Septets for GSM-7, UTF-16 code units for UCS-2."""
    segments: int
    """Messages the carrier delivers (and bills); 0 for an empty text."""

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"encoding": self.encoding, "units": self.units, "segments": self.segments}


def is_gsm7(text: str) -> bool:
    """True when every character of `text` is in the GSM 7-bit alphabet (with extensions)."""
    return all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text)


def encoding_of(text: str) -> Encoding:
    """GSM-7 when the alphabet allows, else UCS-2."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def _unit_cost(ch: str, encoding: Encoding) -> int:
    if encoding == "GSM-7":
        return 2 if ch in GSM_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1  # a surrogate pair in UTF-16


def split(text: str) -> list[str]:
    """`text` cut into the parts a carrier would deliver; joined, they give `text` back."""
    encoding = encoding_of(text)
    single, part = (GSM_SINGLE, GSM_PART) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_PART)
    total = sum(_unit_cost(ch, encoding) for ch in text)
    if total <= single:
        return [text] if text else []
    parts: list[str] = []
    start, used = 0, 0
    for index, ch in enumerate(text):
        cost = _unit_cost(ch, encoding)
        if used + cost > part:  # the character would straddle two parts: it starts the next
            parts.append(text[start:index])
            start, used = index, 0
        used += cost
    parts.append(text[start:])
    return parts


def measure(text: str) -> SmsParts:
    """Encoding, units and segments of `text`."""
    encoding = encoding_of(text)
    units = sum(_unit_cost(ch, encoding) for ch in text)
    return SmsParts(encoding, units, len(split(text)))
