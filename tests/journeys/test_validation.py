"""Every validation rule: each bad definition gets a problem that names the step, the field
and the reason (with a suggestion where one is obvious), and all problems come at once."""

from __future__ import annotations

from typing import Any

import pytest

from cadenza.contacts import FieldSpec
from cadenza.errors import ValidationFailed
from cadenza.journeys import JourneyInvalid, Problem, compile_definition
from tests.journeys.conftest import minimal


def problems(definition: Any, **options: Any) -> list[Problem]:
    """The problems compile_definition reports (it must report some)."""
    with pytest.raises(JourneyInvalid) as caught:
        compile_definition(definition, **options)
    return list(caught.value.problems)


def only(definition: Any, **options: Any) -> Problem:
    """The single problem of `definition`."""
    found = problems(definition, **options)
    assert len(found) == 1, [p.describe() for p in found]
    return found[0]


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    """`minimal()` with these steps."""
    return minimal(steps=list(items))


SEND = {"channel": "email", "template": "welcome"}


def test_the_message_names_journey_step_field_and_suggestion() -> None:
    definition = steps(
        {"id": "by-plan", "branch": [{"when": {"attr": "plan", "eq": "pro"}, "goto": "pro-tip"},
                                     {"goto": "offer"}]},
        {"id": "pro-tips", "send": SEND, "end": True},
        {"id": "offer", "send": SEND})
    with pytest.raises(JourneyInvalid) as caught:
        compile_definition(definition)
    error = caught.value
    assert isinstance(error, ValidationFailed)
    assert error.message == ("journey 'welcome-flow', step 'by-plan', branch.0.goto: 'pro-tip' "
                             "names no step (did you mean 'pro-tips'?)")
    assert error.journey == "welcome-flow"
    assert error.problems == (Problem("by-plan", "branch.0.goto",
                                      "'pro-tip' names no step (did you mean 'pro-tips'?)"),)
    assert error.to_dict()["problems"] == [
        {"step": "by-plan", "field": "branch.0.goto",
         "reason": "'pro-tip' names no step (did you mean 'pro-tips'?)"}]
    assert error.code == "journey.invalid"
    assert error.field == "steps.by-plan.branch.0.goto"


@pytest.mark.parametrize(("items", "step", "field"), [
    ([{"id": "a", "send": SEND, "goto": "bb"}, {"id": "b", "send": SEND}], "a", "goto"),
    ([{"id": "a", "wait_for": {"event": "x", "timeout": "1d"}, "on_event": "bb"},
      {"id": "b", "send": SEND}], "a", "on_event"),
    ([{"id": "a", "wait_for": {"event": "x", "timeout": "1d"}, "on_timeout": "bb"},
      {"id": "b", "send": SEND}], "a", "on_timeout"),
    ([{"id": "a", "split": [{"name": "x", "weight": 1, "goto": "bb"},
                            {"name": "y", "weight": 1}]},
      {"id": "b", "send": SEND}], "a", "split.0.goto"),
])
def test_targets_that_name_no_step(items: list[dict[str, Any]], step: str, field: str) -> None:
    problem = only(steps(*items))
    assert (problem.step, problem.field) == (step, field)
    assert problem.reason == "'bb' names no step (did you mean 'b'?)"


def test_end_is_a_target_everywhere() -> None:
    spec = compile_definition(steps(
        {"id": "a", "wait_for": {"event": "x", "timeout": "1d"}, "on_event": "end",
         "on_timeout": "b"},
        {"id": "b", "split": [{"name": "x", "weight": 1, "goto": "end"},
                              {"name": "y", "weight": 1, "goto": "c"}]},
        {"id": "c", "send": SEND, "goto": "end"}))
    assert spec.steps["a"].next == "$end"


def test_wait_for_needs_a_timeout() -> None:
    problem = only(steps({"id": "wait-buy", "wait_for": {"event": "purchased"}}))
    assert (problem.step, problem.field) == ("wait-buy", "wait_for.timeout")
    assert "needs a timeout (e.g. timeout: 3d)" in problem.reason


def test_unreachable_steps() -> None:
    found = problems(steps({"id": "a", "send": SEND, "goto": "c"},
                           {"id": "b", "send": SEND},
                           {"id": "c", "send": SEND, "end": True},
                           {"id": "d", "send": SEND}))
    assert [(p.step, p.field) for p in found] == [("b", ""), ("d", "")]
    assert "cannot be reached from the first step 'a'" in found[0].reason


def test_an_exit_step_leads_nowhere_and_a_branch_with_else_does_not_fall_through() -> None:
    found = problems(steps(
        {"id": "a", "branch": [{"when": {"tag": "vip"}, "goto": "c"}, {"goto": "d"}]},
        {"id": "b", "send": SEND},
        {"id": "c", "exit": True},
        {"id": "d", "send": SEND, "end": True}))
    assert [p.step for p in found] == ["b"]


def test_a_loop_without_a_wait() -> None:
    found = problems(steps({"id": "a", "send": SEND},
                           {"id": "b", "tag": {"add": ["x"]}},
                           {"id": "c", "branch": [{"when": {"tag": "vip"}, "goto": "a"}]}))
    assert len(found) == 1
    assert found[0].step == "a"
    assert "steps 'a', 'b' and 'c' form a loop with no wait in it" in found[0].reason
    assert "add a wait" in found[0].reason


def test_a_step_that_leads_to_itself() -> None:
    problem = only(steps({"id": "a", "send": SEND, "goto": "a"}))
    assert problem.step == "a"
    assert problem.reason.startswith("leads back to itself with no wait")


@pytest.mark.parametrize("wait", [{"wait": "1d"}, {"wait_until": {"at": "09:00"}},
                                  {"wait_for": {"event": "x", "timeout": "1d"},
                                   "on_timeout": "a"}])
def test_a_loop_with_a_wait_is_fine(wait: dict[str, Any]) -> None:
    compile_definition(steps({"id": "a", "send": SEND}, {"id": "w", **wait, "goto": "a"}))


@pytest.mark.parametrize(("items", "step", "field", "words"), [
    ([{"id": "a", "send": SEND}, {"id": "a", "send": SEND}], "a", "id",
     "is used by an earlier step too (step 1)"),
    ([{"send": SEND}], None, "steps.0.id", "is required"),
    ([{"id": "Bad id!", "send": SEND}], None, "steps.0.id", "is not a step id"),
    ([{"id": "end", "send": SEND}], None, "steps.0.id", "'end' is reserved"),
    ([{"id": 7, "send": SEND}], None, "steps.0.id", "must be a string"),
    ([{"id": "x" * 129, "send": SEND}], None, "steps.0.id", "at most 128"),
])
def test_step_ids(items: list[dict[str, Any]], step: str | None, field: str,
                  words: str) -> None:
    problem = only(steps(*items))
    assert (problem.step, problem.field) == (step, field)
    assert words in problem.reason


def test_unknown_channels() -> None:
    problem = only(steps({"id": "a", "send": {"channel": "emial", "template": "w"}}))
    assert (problem.step, problem.field) == ("a", "send.channel")
    assert problem.reason.startswith("'emial' is not a channel (did you mean 'email'?)")
    custom = compile_definition(steps({"id": "a", "send": {"channel": "slack"}}),
                                channels={"slack", "task"})
    assert custom.steps["a"].channel == "slack"  # type: ignore[attr-defined]
    problem = only(steps({"id": "a", "task": {"title": "Call"}}), channels={"email"})
    assert "need the task channel" in problem.reason


def test_unknown_templates_and_templates_of_another_channel() -> None:
    found = problems(steps({"id": "a", "send": {"channel": "email", "template": "welcom"}},
                           {"id": "b", "send": {"channel": "email", "template": "code"}},
                           {"id": "c", "send": {"channel": "webhook", "url": "http://x"}}),
                     templates={"welcome": "email", "code": "sms"})
    assert [(p.step, p.field, p.reason) for p in found] == [
        ("a", "send.template", "'welcom' names no template (did you mean 'welcome'?); create "
                               "it first"),
        ("b", "send.template", "'code' is a sms template, not email")]


def test_conditions_and_date_attributes_must_be_declared() -> None:
    definition = minimal(
        entry=[{"event": "signed_up", "where": {"attr": "plna", "eq": "pro"}},
               {"date": {"attr": "renewal", "offset": "-3d"}}],
        steps=[{"id": "a", "branch": [{"when": {"attr": "tier", "eq": "gold"}, "goto": "b"}]},
               {"id": "b", "wait_until": {"attr": "renewl_date"}}])
    found = problems(definition, attributes=["plan", "renewal_date"])
    assert [(p.step, p.field) for p in found] == [
        (None, "entry.0.where.attr"), (None, "entry.1.date.attr"),
        ("a", "branch.0.when.attr"), ("b", "wait_until.attr")]
    assert "(did you mean 'plan'?)" in found[0].reason
    assert "'renewal' is not a declared field (did you mean 'renewal_date'?)" in \
        found[1].reason
    # Built-in attributes need no declaration; without declarations nothing is checked.
    compile_definition(minimal(entry={"event": "x", "where": {"attr": "email", "exists":
                                                              True}}), attributes=[])
    compile_definition(definition)


def test_update_values_must_fit_declared_fields() -> None:
    fields = {"score": FieldSpec("score", "number")}
    problem = only(steps({"id": "a", "update": {"score": "high"}}), fields=fields)
    assert (problem.step, problem.field) == ("a", "update.score")
    assert "not a valid number" in problem.reason
    spec = compile_definition(steps({"id": "a", "update": {"score": "12", "other": "x"}}),
                              fields=fields)
    assert spec.steps["a"].attributes == {"score": "12", "other": "x"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("weight", "words"), [(0, "greater than 0"), (-5, "greater than 0"),
                                               ("50", "whole number"), (2.5, "whole number")])
def test_split_weights_are_positive_whole_numbers(weight: Any, words: str) -> None:
    problem = only(steps({"id": "a", "split": [{"name": "x", "weight": weight},
                                               {"name": "y", "weight": 1}]}))
    assert (problem.step, problem.field) == ("a", "split.0.weight")
    assert words in problem.reason


@pytest.mark.parametrize("entry", [None, []])
def test_no_entry_trigger(entry: Any) -> None:
    definition = minimal()
    if entry is None:
        del definition["entry"]
    else:
        definition["entry"] = entry
    problem = only(definition)
    assert (problem.step, problem.field) == (None, "entry")
    assert "a journey needs at least one entry trigger" in problem.reason


@pytest.mark.parametrize(("definition", "step", "field", "reason"), [
    (minimal(stpes=[]), None, "stpes", "unknown key 'stpes' (did you mean 'steps'?)"),
    (minimal(entry={"event": "x", "wher": {}}), None, "entry.wher",
     "unknown key 'wher' (did you mean 'where'?)"),
    (minimal(entry=[{"evnt": "x"}]), None, "entry.0.evnt",
     "unknown key 'evnt' (did you mean 'event'?)"),
    (minimal(exit_when=[{"event": "x", "convertion": True}]), None, "exit_when.0.convertion",
     "unknown key 'convertion' (did you mean 'conversion'?)"),
    (steps({"id": "a", "sendd": SEND}), "a", "sendd", "unknown key 'sendd' (did you mean "
                                                      "'send'?)"),
    (steps({"id": "a", "wait_for": {"event": "x", "timout": "1d", "timeout": "1d"}}), "a",
     "wait_for.timout", "unknown key 'timout' (did you mean 'timeout'?)"),
    (steps({"id": "a", "wait": "1d", "on_timeout": "end"}), "a", "on_timeout",
     "'on_timeout' belongs to wait_for steps, not wait steps"),
    (steps({"id": "a", "send": {"channel": "email", "templte": "x"}}), "a", "send",
     "key 'templte' looks like a misspelling (did you mean 'template'?)"),
    (steps({"id": "a", "tag": {"ad": ["x"]}}), "a", "tag.ad",
     "unknown key 'ad' (did you mean 'add'?)"),
])
def test_unknown_keys_anywhere(definition: dict[str, Any], step: str | None, field: str,
                               reason: str) -> None:
    problem = only(definition)
    assert (problem.step, problem.field) == (step, field)
    assert problem.reason.startswith(reason)


def test_a_step_has_one_kind() -> None:
    found = problems(steps({"id": "a", "send": SEND, "wait": "1d"}, {"id": "b"},
                           "just a string"))
    assert [(p.step, p.field) for p in found] == [("a", ""), ("b", ""), (None, "steps.2")]
    assert found[0].reason == ("does send and wait at once, but a step does one thing; split "
                               "it into 2 steps")
    assert found[1].reason.startswith("says what it does with one of send, wait,")
    assert "must be a mapping" in found[2].reason
    problem = only(minimal(entry={"event": "x", "api": True}))
    assert problem.reason.startswith("has event and api, but a trigger is of one kind")


@pytest.mark.parametrize(("items", "step", "field", "words"), [
    ([{"id": "a", "send": SEND, "goto": "b", "end": True}, {"id": "b", "wait": "1d"}],
     "a", "end", "contradicts goto"),
    ([{"id": "a", "exit": True, "goto": "a"}], "a", "goto", "an exit step ends the journey"),
    ([{"id": "a", "exit": False}], "a", "exit", "must be true"),
    ([{"id": "a", "branch": [{"goto": "b"}, {"when": {"tag": "x"}, "goto": "b"}]},
      {"id": "b", "wait": "1d"}], "a", "branch.1", "never taken"),
    ([{"id": "a", "tag": {}}], "a", "tag", "adds and removes nothing"),
    ([{"id": "a", "tag": {"add": ["x"], "remove": ["x"]}}], "a", "tag", "adds and removes 'x'"),
    ([{"id": "a", "wait_until": {"attr": "d", "on": ["mon"]}}], "a", "wait_until.on",
     "does not combine with attr"),
    ([{"id": "a", "wait_until": {"offset": "1d"}}], "a", "wait_until.offset", "needs attr"),
    ([{"id": "a", "wait_until": {"at": "9:00"}}], "a", "wait_until.at",
     "'9:00' is not a time of day as HH:MM"),
    ([{"id": "a", "wait_until": {"on": ["monday"]}}], "a", "wait_until.on.0",
     "must be 'mon', 'tue'"),
    ([{"id": "a", "wait": "2x"}], "a", "wait", "'2x' is not a duration"),
    ([{"id": "a", "wait": "0s"}], "a", "wait", "must be longer than 0"),
    ([{"id": "a", "wait_for": {"event": "x", "timeout": "-1d"}}], "a", "wait_for.timeout",
     "negative"),
    ([{"id": "a", "split": [{"name": "x", "weight": 1}, {"name": "x", "weight": 1}]}], "a",
     "split.1.name", "'x' is used twice"),
    ([{"id": "a", "wait_for": {"event": "x", "timeout": "1d", "match": ["order_id"]}}], None,
     None, None),  # fine: the entry is an event
    ([{"id": "a", "task": {"title": "Call {{ contact.email"}}], "a", "task.title",
     "is not a valid template"),
    ([{"id": "a", "branch": [{"when": {"attr": "plan", "eqq": "pro"}, "goto": "end"}]}], "a",
     "branch.0.when.eqq", "unknown operator 'eqq' (did you mean 'eq'?)"),
    ([{"id": "a", "send": SEND, "goto": "Not A Step!"}], "a", "goto", "is not a step id or end"),
])
def test_step_rules(items: list[dict[str, Any]], step: str | None, field: str | None,
                    words: str | None) -> None:
    if words is None:
        compile_definition(steps(*items))
        return
    problem = only(steps(*items))
    assert (problem.step, problem.field) == (step, field), problem
    assert words in problem.reason, problem


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"journey": "Trial Onboarding"}, "journey", "is not a journey key"),
    ({"journey": "schema"}, "journey", "reserved"),
    ({"re_entry": "sometimes"}, "re_entry", "must be 'never' or 'always'"),
    ({"re_entry": {"cooldown": "0d"}}, "re_entry.cooldown", "longer than 0"),
    ({"entry": {"schedule": {"every": "week", "at": "09:00"}}}, "entry.schedule.on",
     "is required with every: week"),
    ({"entry": {"schedule": {"every": "day", "on": ["mon"], "at": "09:00"}}},
     "entry.schedule.on", "narrows a weekly schedule"),
    ({"entry": {"schedule": {"every": "day", "at": "09:00", "timezone": "Europe/Pariss"}}},
     "entry.schedule.timezone", "(did you mean 'Europe/Paris'?)"),
    ({"entry": {"attribute": "plan", "to": [{"a": 1}]}}, "entry.to", "must be a value"),
    ({"entry": {"segment": "trial", "on": "join"}}, "entry.on", "must be 'enter' or 'exit'"),
    ({"entry": {"api": False}}, "entry.api", "must be True"),
    ({"exit_when": [{"event": "x"}], "goals": [{"event": "x"}]}, "goals.0",
     "goal name 'x' is used twice"),
    ({"allow_multiple": "yes"}, "allow_multiple", "must be true or false"),
    ({"name": ""}, "name", "must not be empty"),
    ({"steps": []}, "steps", "at least one step"),
    ({"steps": {"id": "a"}}, "steps", "must be a list"),
])
def test_header_rules(changes: dict[str, Any], field: str, words: str) -> None:
    problem = only(minimal(**changes))
    assert (problem.step, problem.field) == (None, field), problem
    assert words in problem.reason, problem


def test_match_needs_an_event_or_api_entry() -> None:
    problem = only(minimal(entry={"segment": "trial"}, steps=[
        {"id": "a", "wait_for": {"event": "x", "timeout": "1d", "match": ["order_id"]}}]))
    assert (problem.step, problem.field) == ("a", "wait_for.match")


def test_enroll_must_name_a_journey() -> None:
    definition = steps({"id": "a", "enroll": {"journey": "win-bak"}},
                       {"id": "b", "enroll": {"journey": "welcome-flow"}})
    problem = only(definition, journeys=["win-back"])
    assert (problem.step, problem.field) == ("a", "enroll.journey")
    assert problem.reason == "'win-bak' names no journey (did you mean 'win-back'?)"


def test_a_definition_that_is_not_a_mapping() -> None:
    problem = only(["journey"])
    assert "must be a mapping" in problem.reason


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    definition = minimal(
        entry={"event": "signed_up", "wher": {}},
        re_entry="sometimes",
        steps=[{"id": "welcome", "send": {"channel": "emial", "template": "w"}},
               {"id": "settle", "wait": "2x"},
               {"id": "by-plan", "branch": [{"when": {"attr": "plan", "eqq": "pro"},
                                             "goto": "pro-tip"}]},
               {"id": "pro-tips", "send": SEND},
               {"id": "offer", "split": [{"name": "a", "weight": 0}]},
               {"id": "wait-buy", "wait_for": {"event": "x"}},
               {"id": "both", "send": SEND, "wait": "1d"},
               {"id": "settle", "wait": "1d"}])
    with pytest.raises(JourneyInvalid) as caught:
        compile_definition(definition)
    located = [(p.step, p.field) for p in caught.value.problems]
    assert located == [
        (None, "entry.wher"), (None, "re_entry"), ("welcome", "send.channel"),
        ("settle", "wait"), ("settle", "id"), ("by-plan", "branch.0.when.eqq"),
        ("by-plan", "branch.0.goto"), ("offer", "split.0.weight"),
        ("wait-buy", "wait_for.timeout"), ("both", "")]
    message = caught.value.message
    assert message.startswith("journey 'welcome-flow' has 10 problems:\n  - entry.wher: ")
    assert "\n  - step 'by-plan', branch.0.goto: 'pro-tip' names no step" in message
