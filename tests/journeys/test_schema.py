"""The JSON Schema of journey files: the committed file is the generated one."""

from __future__ import annotations

import json
from pathlib import Path

from cadenza.journeys import journey_schema, schema_text
from cadenza.journeys.format import STEP_MODELS, TRIGGER_KINDS

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "journey.schema.json"


def test_the_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "docs/journey.schema.json is stale; regenerate it with "
        "`uv run cadenza journeys schema > docs/journey.schema.json`")


def test_the_schema_describes_every_kind_and_forbids_unknown_keys() -> None:
    schema = journey_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == {"journey", "entry", "steps"}
    assert schema["additionalProperties"] is False
    steps = schema["properties"]["steps"]["items"]["oneOf"]
    assert len(steps) == len(STEP_MODELS)
    for ref in steps:
        definition = schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]
        assert definition["additionalProperties"] is False
        assert "id" in definition["required"]
    triggers = schema["properties"]["entry"]["anyOf"][0]["oneOf"]
    assert len(triggers) == len(TRIGGER_KINDS)
    assert json.loads(schema_text()) == schema
