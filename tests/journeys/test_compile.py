"""Compiling a full example into the spec the engine reads, and the format's defaults."""

from __future__ import annotations

import json

from cadenza.journeys import (
    END,
    ApiTrigger,
    AttributeTrigger,
    BranchArm,
    BranchStep,
    DateTrigger,
    EmitStep,
    EnrollStep,
    EventTrigger,
    ExitStep,
    Goal,
    ReEntry,
    ScheduleTrigger,
    SegmentTrigger,
    SendStep,
    SplitStep,
    SplitVariant,
    TagStep,
    TaskStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
    compile_definition,
    load_journey,
)
from cadenza.segments import parse_condition
from tests.journeys.conftest import EXAMPLE, minimal

DAY = 86_400_000


def test_the_full_example_compiles_to_the_expected_spec() -> None:
    spec = compile_definition(load_journey(EXAMPLE.read_text()))
    assert spec.key == "trial-onboarding"
    assert spec.name == "Trial onboarding"
    assert spec.triggers == (
        EventTrigger("signed_up", parse_condition({"prop": "plan", "eq": "trial"}, "w")),
        AttributeTrigger("plan", ("trial", "pilot")),
        DateTrigger("renewal_date", -3 * DAY, (9, 0)),
        ApiTrigger(parse_condition({"attr": "country", "in": ["FR", "DE"]}, "w")),
        ScheduleTrigger("week", (8, 30), (0, 4), "contact"),
        SegmentTrigger("trial-users", "enter"),
    )
    assert spec.re_entry == ReEntry("cooldown", 30 * DAY)
    assert spec.allow_multiple is False
    assert spec.goals == (
        Goal("purchased", "purchased", parse_condition({"event_prop": "total", "gt": 0}, "w")),
        Goal("unsubscribed", "unsubscribed", conversion=False),
        Goal("upgraded", "upgraded", exit=False),
    )
    assert spec.first == "welcome"
    assert list(spec.steps.values()) == [
        SendStep("welcome", "settle", channel="email", template="welcome"),
        WaitStep("settle", "by-plan", duration_ms=2 * DAY),
        BranchStep("by-plan", "pro-tips", arms=(
            BranchArm(parse_condition({"attr": "plan", "eq": "pro"}, "w"), "pro-tips"),
            BranchArm(None, "offer"))),
        SendStep("pro-tips", "monday", channel="email", template="pro-tips"),
        SplitStep("offer", "mark-discount", variants=(
            SplitVariant("plain", 50, "monday"), SplitVariant("discount", 50, "mark-discount"))),
        TagStep("mark-discount", "monday", add=("discount",), remove=("cold",)),
        WaitUntilStep("monday", "wait-buy", at=(9, 0), weekdays=(0,)),
        WaitForStep("wait-buy", "thanks", event="purchased", timeout_ms=3 * DAY,
                    on_timeout="last-chance", match=("order_id",)),
        SendStep("last-chance", "before-renewal", channel="webhook",
                 params={"url": "https://hooks.example.com/last-chance"}),
        WaitUntilStep("before-renewal", "nurtured", at=(10, 0), attr="renewal_date",
                      offset_ms=-DAY),
        UpdateStep("nurtured", "done", attributes={"nurtured": True}),
        EmitStep("done", "to-sales", event="nurture_done",
                 properties={"source": "trial-onboarding"}),
        EnrollStep("to-sales", "call", journey="sales-follow-up"),
        TaskStep("call", END, title="Call {{ contact.email }}", queue="sales", due_ms=2 * DAY,
                 details={"priority": "high"}),
        SendStep("thanks", "stop", channel="email", template="thanks"),
        ExitStep("stop", END),
    ]


def test_json_and_yaml_compile_alike() -> None:
    from_yaml = load_journey(EXAMPLE.read_text())
    assert compile_definition(json.loads(json.dumps(from_yaml))) == \
        compile_definition(from_yaml)


def test_defaults() -> None:
    spec = compile_definition(minimal(
        entry={"api": True},
        exit_when=[{"event": "bought"}],
        steps=[{"id": "a", "wait_for": {"event": "x", "timeout": 60_000}},
               {"id": "b", "split": [{"name": "v", "weight": 1}]},
               {"id": "c", "wait_until": {}},
               {"id": "d", "task": {"title": "t"}},
               {"id": "e", "send": {"channel": "log"}}]))
    assert spec.name == "welcome-flow"
    assert spec.triggers == (ApiTrigger(),)
    assert spec.re_entry == ReEntry("never")
    assert spec.goals == (Goal("bought", "bought", conversion=True, exit=True),)
    assert spec.steps["a"] == WaitForStep("a", "b", event="x", timeout_ms=60_000,
                                          on_timeout="b")
    assert spec.steps["b"] == SplitStep("b", "c", variants=(SplitVariant("v", 1, "c"),))
    assert spec.steps["c"] == WaitUntilStep("c", "d", at=(9, 0))
    assert spec.steps["d"] == TaskStep("d", "e", title="t", queue="default")
    assert spec.steps["e"].next == END  # the last step runs off the end


def test_goto_sets_the_default_of_both_wait_for_outcomes() -> None:
    spec = compile_definition(minimal(steps=[
        {"id": "a", "wait_for": {"event": "x", "timeout": "1d"}, "goto": "c"},
        {"id": "b", "send": {"channel": "log"}, "end": True},
        {"id": "c", "wait_for": {"event": "x", "timeout": "1d"}, "on_event": "b"}]))
    assert spec.steps["a"] == WaitForStep("a", "c", event="x", timeout_ms=DAY, on_timeout="c")
    assert spec.steps["c"] == WaitForStep("c", "b", event="x", timeout_ms=DAY, on_timeout=END)


def test_re_entry_always_and_signed_offsets() -> None:
    spec = compile_definition(minimal(
        re_entry="always", allow_multiple=True,
        entry=[{"date": {"attr": "birthday"}}, {"date": {"attr": "birthday", "offset": "1w"}},
               {"date": {"attr": "birthday", "offset": -3_600_000}}]))
    assert spec.re_entry == ReEntry("always")
    assert spec.allow_multiple is True
    assert [t.offset_ms for t in spec.triggers] == [0, 7 * DAY, -3_600_000]  # type: ignore[union-attr]
