"""Reachability and loops-without-a-wait on random step graphs, against a plain reference
that reads the definition itself (not the spec): fixpoint reachability, and "can this
non-wait step get back to itself through non-wait steps"."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.journeys import JourneyInvalid, compile_definition, loops_without_wait, unreachable

WAITS = {"wait", "wait_until", "wait_for"}
KINDS = ("send", "wait", "wait_for", "branch", "split", "exit", "tag")


@st.composite
def graphs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Steps s0..sN of random kinds whose targets are random steps or `end`."""
    count = draw(st.integers(1, 9))
    ids = [f"s{i}" for i in range(count)]
    target = st.sampled_from([*ids, "end"])
    steps = []
    for step_id in ids:
        kind = draw(st.sampled_from(KINDS))
        step: dict[str, Any] = {"id": step_id}
        if kind == "send":
            step["send"] = {"channel": "log"}
        elif kind == "tag":
            step["tag"] = {"add": ["x"]}
        elif kind == "wait":
            step["wait"] = "1h"
        elif kind == "exit":
            step["exit"] = True
        elif kind == "wait_for":
            step["wait_for"] = {"event": "e", "timeout": "1d"}
            for key in ("on_event", "on_timeout"):
                if draw(st.booleans()):
                    step[key] = draw(target)
        elif kind == "branch":
            arms = [{"when": {"tag": f"t{i}"}, "goto": draw(target)}
                    for i in range(draw(st.integers(1, 3)))]
            if draw(st.booleans()):
                arms.append({"goto": draw(target)})
            step["branch"] = arms
        else:
            step["split"] = [{"name": f"v{i}", "weight": 1, **(
                {"goto": draw(target)} if draw(st.booleans()) else {})}
                for i in range(draw(st.integers(1, 3)))]
        if kind != "exit":
            choice = draw(st.sampled_from(["none", "goto", "end"]))
            if choice == "goto":
                step["goto"] = draw(target)
            elif choice == "end":
                step["end"] = True
        steps.append(step)
    return steps


def kind_of(step: dict[str, Any]) -> str:
    return next(k for k in ("send", "tag", "wait", "exit", "wait_for", "branch", "split")
                if k in step)


def reference_edges(steps: list[dict[str, Any]]) -> dict[str, set[str]]:
    """What may follow each step, read straight from the definition."""
    edges: dict[str, set[str]] = {}
    for index, step in enumerate(steps):
        following = steps[index + 1]["id"] if index + 1 < len(steps) else "end"
        default = step.get("goto", "end" if step.get("end") else following)
        kind = kind_of(step)
        if kind == "exit":
            out: set[str] = set()
        elif kind == "branch":
            out = {arm["goto"] for arm in step["branch"]}
            if all("when" in arm for arm in step["branch"]):
                out.add(default)
        elif kind == "split":
            out = {v.get("goto", default) for v in step["split"]}
        elif kind == "wait_for":
            out = {step.get("on_event", default), step.get("on_timeout", default)}
        else:
            out = {default}
        edges[step["id"]] = out - {"end"}
    return edges


def reference(steps: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """(unreachable steps, steps on a loop of non-wait steps)."""
    edges = reference_edges(steps)
    reached = {steps[0]["id"]}
    changed = True
    while changed:
        changed = False
        for source in list(reached):
            for target in edges[source] - reached:
                reached.add(target)
                changed = True
    kinds = {s["id"]: kind_of(s) for s in steps}
    looping = set()
    for start in edges:
        if kinds[start] in WAITS:
            continue
        seen: set[str] = set()
        todo = [t for t in edges[start] if kinds[t] not in WAITS]
        while todo:
            node = todo.pop()
            if node == start:
                looping.add(start)
                break
            if node not in seen:
                seen.add(node)
                todo += [t for t in edges[node] if kinds[t] not in WAITS]
    return set(edges) - reached, looping


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_graph_rules_match_the_reference(steps: list[dict[str, Any]]) -> None:
    lost, looping = reference(steps)
    definition = {"journey": "fuzz", "entry": {"event": "go"}, "steps": steps}
    try:
        spec = compile_definition(definition)
    except JourneyInvalid as exc:
        found = list(exc.problems)
    else:
        assert unreachable(spec.steps) == []
        assert loops_without_wait(spec.steps) == []
        found = []
    flagged_lost = {p.step for p in found if "cannot be reached" in p.reason}
    loop_heads = [p for p in found if "no wait" in p.reason]
    assert flagged_lost == lost
    assert bool(loop_heads) == bool(looping)
    assert {p.step for p in loop_heads} <= looping
    assert len(found) == len(flagged_lost) + len(loop_heads), found


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_graph_functions_on_the_spec(steps: list[dict[str, Any]]) -> None:
    """The same, straight on the graph functions (through a spec built with the graph rules'
    problems ignored)."""
    from cadenza.journeys.compile import _Builder
    from cadenza.journeys.structure import parse

    builder = _Builder(parse({"journey": "fuzz", "entry": {"event": "go"}, "steps": steps}),
                       None, None, None, None, None)
    built = builder.steps()
    lost, looping = reference(steps)
    assert set(unreachable(built)) == lost
    assert {s for loop in loops_without_wait(built) for s in loop} == looping
