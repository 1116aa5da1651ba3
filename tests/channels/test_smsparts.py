"""Segment counting: GSM-7 (with the extension table) against UCS-2, by example and by
property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.channels.smsparts import GSM_BASIC, GSM_EXTENSION, measure, split

GSM_TEXT = st.text(alphabet=sorted(GSM_BASIC | GSM_EXTENSION), max_size=700)
ANY_TEXT = st.text(max_size=400)
NON_BMP = st.text(alphabet=st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
                  min_size=1, max_size=200)


@pytest.mark.parametrize(("text", "encoding", "units", "segments"), [
    ("", "GSM-7", 0, 0),
    ("Hello", "GSM-7", 5, 1),
    ("x" * 160, "GSM-7", 160, 1),
    ("x" * 161, "GSM-7", 161, 2),
    ("x" * 306, "GSM-7", 306, 2),
    ("x" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),
    ("€" * 81, "GSM-7", 162, 2),  # 76 two-septet characters fill a 153-septet part
    ("€" * 153, "GSM-7", 306, 3),  # ... so 153 of them need three parts, not two
    ("x" * 159 + "^", "GSM-7", 161, 2),
    ("é", "GSM-7", 1, 1),
    ("á", "UCS-2", 1, 1),
    ("ü" * 160, "GSM-7", 160, 1),
    ("y" * 70 + "—", "UCS-2", 71, 2),
    ("—" * 70, "UCS-2", 70, 1),
    ("😀" * 35, "UCS-2", 70, 1),
    ("😀" * 36, "UCS-2", 72, 2),
    ("a" * 66 + "😀" + "b" * 10, "UCS-2", 78, 2),
])
def test_examples(text: str, encoding: str, units: int, segments: int) -> None:
    parts = measure(text)
    assert (parts.encoding, parts.units, parts.segments) == (encoding, units, segments)


def test_an_emoji_is_never_split() -> None:
    first, second = split("a" * 66 + "😀" + "b" * 10)
    assert first == "a" * 66
    assert second.startswith("😀")


def test_an_escape_pair_is_never_split() -> None:
    parts = split("x" * 152 + "€" + "y" * 10)
    assert parts[0] == "x" * 152
    assert parts[1].startswith("€")


@given(GSM_TEXT)
def test_gsm_only_text_is_never_ucs2(text: str) -> None:
    assert measure(text).encoding == "GSM-7"


@given(ANY_TEXT)
def test_splitting_gives_the_text_back_in_parts_that_fit(text: str) -> None:
    parts = split(text)
    assert "".join(parts) == text
    assert len(parts) == measure(text).segments
    encoding = measure(text).encoding
    cap = (153 if encoding == "GSM-7" else 67) if len(parts) > 1 else (
        160 if encoding == "GSM-7" else 70)
    for part in parts:
        units = (sum(2 if ch in GSM_EXTENSION else 1 for ch in part) if encoding == "GSM-7"
                 else len(part.encode("utf-16-le")) // 2)
        assert 0 < units <= cap


@given(NON_BMP)
def test_surrogate_pairs_stay_whole(text: str) -> None:
    for part in split(text):
        assert len(part.encode("utf-16-le")) % 4 == 0  # only whole pairs
    assert measure(text).units == 2 * len(text)


@given(st.one_of(GSM_TEXT, ANY_TEXT), st.integers(min_value=0, max_value=700))
def test_segments_grow_with_the_text(text: str, cut: int) -> None:
    assert measure(text[:cut]).segments <= measure(text).segments


@given(GSM_TEXT, st.sampled_from(["—", "á", "😀", "中"]))
def test_one_foreign_character_makes_it_ucs2(text: str, foreign: str) -> None:
    mixed = text + foreign
    assert measure(mixed).encoding == "UCS-2"
    assert measure(mixed).segments >= measure(text).segments
