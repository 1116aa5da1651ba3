"""Reading journey files: YAML and JSON, YAML 1.1 surprises avoided, hostile input refused
with a sentence (size, aliases, depth, duplicates, values JSON cannot hold)."""

from __future__ import annotations

import json

import pytest

from cadenza.errors import PayloadTooLarge, ValidationFailed
from cadenza.journeys import canonical_json, content_hash, definition_yaml, load_journey
from cadenza.journeys.loading import MAX_BYTES
from tests.journeys.conftest import EXAMPLE, minimal


def test_yaml_and_json_give_the_same_definition() -> None:
    from_yaml = load_journey(EXAMPLE.read_text())
    assert load_journey(json.dumps(from_yaml)) == from_yaml
    assert load_journey(json.dumps(from_yaml).encode()) == from_yaml


def test_yaml_1_1_words_and_times_stay_strings() -> None:
    loaded = load_journey("journey: x\non: enter\noff: no\nat: 9:30\nday: 2026-05-01\n"
                          "zero: 09\nflag: true\nnothing: null\nratio: 1.5\n")
    assert loaded == {"journey": "x", "on": "enter", "off": "no", "at": "9:30",
                      "day": "2026-05-01", "zero": 9, "flag": True, "nothing": None,
                      "ratio": 1.5}


def test_a_yaml_flow_mapping_is_not_mistaken_for_json() -> None:
    assert load_journey("{journey: x, steps: []}") == {"journey": "x", "steps": []}


def test_no_non_finite_number_gets_in() -> None:
    # Not JSON, so read as YAML, where these are words.
    assert load_journey('{"a": NaN, "b": .inf, "c": -Infinity}') == {
        "a": "NaN", "b": ".inf", "c": "-Infinity"}


@pytest.mark.parametrize(("text", "field", "words"), [
    ("journey: x\njourney: y\n", "yaml", ["line 2", "'journey' appears twice"]),
    ('{"journey": "x", "journey": "y"}', "json", ["appears twice"]),
    ("journey: [x\n", "yaml", ["line"]),
    ("- a\n- b\n", "file", ["must be a mapping"]),
    ("", "file", ["must be a mapping"]),
    ("journey: !!binary aGVsbG8=\n", "journey", ["bytes"]),
    ("journey: !!set {a, b}\n", "journey", ["set"]),
    ("? [a, b]\n: c\n", "yaml", ["plain words"]),
    ("1: x\n", "file", ["not a string"]),
    ("journey: \"a\\0b\"\n", "journey", ["nul"]),
    ("n: 99999999999999999999\n", "n", ["64 bits"]),
    ("journey: !!python/object:os.system x\n", "yaml", ["python/object"]),
])
def test_unreadable_files_are_refused_with_a_sentence(text: str, field: str,
                                                      words: list[str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_journey(text)
    assert caught.value.field == field
    for word in words:
        assert word.lower() in caught.value.reason.lower()


def test_an_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    with pytest.raises(ValidationFailed, match="aliases are expanded"):
        load_journey("\n".join(lines) + "\n")


def test_a_self_referencing_alias_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="nested more than"):
        load_journey("journey: &a [*a]\n")


@pytest.mark.parametrize("kind", ["yaml-block", "yaml-flow", "json"])
def test_very_deep_documents_are_refused_before_recursion(kind: str) -> None:
    depth = 50_000
    text = {"yaml-block": "a:\n" + "".join("  " * i + "- \n" for i in range(1, 200)),
            "yaml-flow": "a: " + "[" * depth + "]" * depth,
            "json": '{"a": ' + "[" * depth + "]" * depth + "}"}[kind]
    with pytest.raises(ValidationFailed, match="nested more than"):
        load_journey(text)


def test_the_size_cap() -> None:
    big = "journey: x\nnote: " + "a" * MAX_BYTES + "\n"
    with pytest.raises(PayloadTooLarge, match="at most 1,000,000"):
        load_journey(big)
    with pytest.raises(PayloadTooLarge):
        load_journey(big.encode())


def test_text_that_is_not_utf8() -> None:
    with pytest.raises(ValidationFailed, match="UTF-8"):
        load_journey(b"journey: caf\xe9\n")


def test_canonical_json_and_hash_ignore_key_order_and_spacing() -> None:
    one = minimal()
    two = json.loads(json.dumps(one, indent=4, sort_keys=True))
    reordered = {key: one[key] for key in reversed(list(one))}
    assert canonical_json(one) == canonical_json(two) == canonical_json(reordered)
    assert content_hash(one) == content_hash(reordered)
    assert content_hash(one) != content_hash(minimal("other-key"))
    assert len(content_hash(one)) == 64


def test_definition_yaml_reads_back_to_the_same_data() -> None:
    definition = load_journey(EXAMPLE.read_text())
    text = definition_yaml(definition)
    assert "on: enter" in text  # no YAML 1.1 quoting
    assert load_journey(text) == definition
