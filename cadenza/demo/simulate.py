"""Run every company and visitor through the window, in a fixed order (same seed, same data)."""

from __future__ import annotations

import random
from collections.abc import Callable

from cadenza.demo import tables as t
from cadenza.demo.behaviour import (
    Journey,
    browse,
    plan_account,
    profile_updates,
    signup,
    use_product,
    visitor,
)
from cadenza.demo.email import Mail, email_program, newsletter_sends
from cadenza.demo.population import DAY, HOUR, MINUTE, Company, LocalCalendar, Person
from cadenza.demo.world import ANON, World, geometric

SECOND = 1000
Report = Callable[[int], None]


def simulate(rng: random.Random, companies: list[Company], people: list[Person],
             calendar: LocalCalendar, report: Report) -> World:
    """Everything that happens in the window, as records, consents and suppressions."""
    world = World(rng, calendar)
    sends = newsletter_sends(world.start, world.end)
    done = 0
    for company in companies:
        _company(world, company, sends)
        done += len(company.members)
        report(done)
    for person in people:
        if person.role == "visitor":
            visitor(world, person)
            done += 1
            if done % 500 == 0:
                report(done)
    report(done)
    return world


def _company(world: World, company: Company, sends: list[Mail]) -> None:
    rng = world.rng
    champion = company.members[0]
    latest = world.end - 3 * HOUR
    # Bigger teams have been around longer: their champion tends to arrive early.
    skew = 0.8 + 0.1 * min(len(company.members), 10)
    arrival = world.start + int((latest - world.start) * rng.random() ** skew)
    first = world.daytime(champion, arrival, t.BROWSE_HOURS, 0.6)
    first = first if world.start <= first <= latest else arrival
    champion.first_seen = first
    last = browse(world, champion, first, 1 + geometric(rng, 0.4), ANON, first=True)
    signup_at = last + rng.randint(60, 300) * SECOND
    if rng.random() > 0.35:
        # Comes back another day (after a visit or two) to sign up.
        later = world.daytime(champion, last + int((1 + rng.expovariate(1 / 3)) * DAY),
                              t.WORK_HOURS, 0.3)
        if last + HOUR < later < latest:
            if rng.random() < 0.5:
                middle = last + (later - last) // 2
                browse(world, champion, middle, 1 + geometric(rng, 0.5), ANON)
            browse(world, champion, later - 4 * MINUTE, 2, ANON, landing="/pricing")
            signup_at = later
    champion.signup_at = signup_at
    journey = Journey(activated=company.target_plan != "free" or rng.random() < 0.72)
    activated_at = signup_at + rng.randint(2, 15) * MINUTE
    account = plan_account(world, company, champion, activated_at, journey)
    signup(world, champion, account, signup_at)
    _activate(world, champion, journey, activated_at)
    use_product(world, champion, account, journey, activated_at + 30 * MINUTE)
    profile_updates(world, champion, journey)
    email_program(world, champion, journey, sends)
    members = company.members[1:]
    for member, (invited, accepted) in zip(members, _invites(world, champion, len(members)),
                                           strict=True):
        world.track(invited, champion, "Invited Teammate",
                    {"invitee_email": member.email,
                     "role": "admin" if rng.random() < 0.15 else "member"})
        member.first_seen = accepted - 2 * MINUTE
        member.signup_at = accepted
        signup(world, member, account, accepted, invited_by=champion)
        mine = Journey(activated=rng.random() < 0.75)
        mine.plan_changes = [(at, plan) for at, plan in account.plans[1:] if at > accepted]
        if mine.activated:
            _activate(world, member, mine, accepted + rng.randint(1, 10) * MINUTE,
                      project=rng.random() < 0.4)
        use_product(world, member, account, mine, accepted + 30 * MINUTE)
        profile_updates(world, member, mine)
        email_program(world, member, mine, sends)


def _invites(world: World, champion: Person, count: int) -> list[tuple[int, int]]:
    """(invited, accepted) times for `count` teammates, in acceptance order."""
    rng = world.rng
    signed = champion.signup_at
    assert signed is not None
    latest = world.end - 20 * MINUTE
    times: list[tuple[int, int]] = []
    for _ in range(count):
        invited = world.daytime(champion, signed + int(rng.expovariate(1 / 3) * DAY),
                                t.WORK_HOURS, 0.2)
        invited = max(invited, signed + 5 * MINUTE)
        accepted = invited + max(2 * MINUTE, int(rng.expovariate(1 / 6) * HOUR))
        if accepted > latest:
            # The window ends first: squeeze the invite into the time that is left.
            accepted = signed + 10 * MINUTE + int((latest - signed - 10 * MINUTE)
                                                  * rng.random())
            invited = accepted - int((accepted - signed - 5 * MINUTE) * rng.random())
        times.append((invited, accepted))
    times.sort(key=lambda pair: pair[1])
    return times


def _activate(world: World, person: Person, journey: Journey, at: int,
              project: bool = True) -> None:
    """The first real session: a project and a few features (the 'aha' moment)."""
    if not journey.activated:
        return
    rng = world.rng
    if project:
        world.track(at, person, "Project Created",
                    {"project_id": f"prj_{rng.getrandbits(32):08x}",
                     "template": rng.choice(t.PROJECT_TEMPLATES)})
    for step in range(1 + geometric(rng, 0.4)):
        world.track(at + (step + 1) * rng.randint(30, 240) * SECOND, person, "Feature Used",
                    {"feature": rng.choice(t.FEATURES), "platform": "web"})

