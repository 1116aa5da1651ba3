"""The step graph of a journey: edges, reachability, and loops that never wait.

A loop through steps that never wait would run a contact round it forever within one engine
pass, so every cycle must contain a wait (wait, wait_until or wait_for).
"""

from __future__ import annotations

from collections.abc import Mapping

from cadenza.journeys.spec import (
    END,
    EXIT,
    BranchStep,
    ExitStep,
    SplitStep,
    Step,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
)

WAIT_STEPS = (WaitStep, WaitUntilStep, WaitForStep)


def successors(step: Step) -> tuple[str, ...]:
    """The steps that may follow `step` (without END and EXIT), in a stable order."""
    if isinstance(step, ExitStep):
        targets: tuple[str, ...] = ()
    elif isinstance(step, BranchStep):
        arms = tuple(arm.goto for arm in step.arms)
        has_else = any(arm.when is None for arm in step.arms)
        targets = arms if has_else else (*arms, step.next)
    elif isinstance(step, SplitStep):
        targets = tuple(variant.goto for variant in step.variants)
    elif isinstance(step, WaitForStep):
        targets = (step.next, step.on_timeout)
    else:
        targets = (step.next,)
    return tuple(dict.fromkeys(t for t in targets if t not in (END, EXIT)))


def unreachable(steps: Mapping[str, Step]) -> list[str]:
    """Ids of steps no path from the first step reaches, in file order."""
    if not steps:
        return []
    first = next(iter(steps))
    seen = {first}
    todo = [first]
    while todo:
        for target in successors(steps[todo.pop()]):
            if target in steps and target not in seen:
                seen.add(target)
                todo.append(target)
    return [step_id for step_id in steps if step_id not in seen]


def loops_without_wait(steps: Mapping[str, Step]) -> list[list[str]]:
    """Groups of steps (each in file order) that form cycles with no wait step in them: the
    strongly connected components of the graph of non-wait steps that hold a cycle."""
    nodes = [s for s, step in steps.items() if not isinstance(step, WAIT_STEPS)]
    graph = {n: [t for t in successors(steps[n]) if t in steps
                 and not isinstance(steps[t], WAIT_STEPS)] for n in nodes}
    order = {n: i for i, n in enumerate(steps)}
    loops = []
    for component in _components(nodes, graph):
        if len(component) > 1 or component[0] in graph[component[0]]:
            loops.append(sorted(component, key=order.__getitem__))
    return sorted(loops, key=lambda c: order[c[0]])


def _components(nodes: list[str], graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (a thousand steps must not hit
    the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if child < len(targets):
                work.append((node, child + 1))
                target = targets[child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            for target in targets:
                if target in on_stack:
                    low[node] = min(low[node], low[target])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(component)
    return found
