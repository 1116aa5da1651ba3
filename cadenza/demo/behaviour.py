"""What people do on the website and in the product: visits, signups, use, subscriptions.

The funnel is visitors -> signups -> activated (created a project) -> paying. Companies are
driven by their champion, who signs up first, invites teammates, may trial and buy a plan,
upgrade it or cancel it. Activity follows working hours in each person's time zone, is much
lower at weekends, and decays after signup (slower for paying customers); churned customers
go quiet. A few power users send many events.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field
from typing import Any

from cadenza.demo import tables as t
from cadenza.demo.population import DAY, HOUR, MINUTE, Company, Person
from cadenza.demo.world import ANON, MOBILE, USER, USER_ANON, USER_MOBILE, World, geometric

SECOND = 1000


@dataclass
class Account:
    """A company's commercial history, decided before its people act."""

    plans: list[tuple[int, str]] = field(default_factory=list)
    """(from time, plan) in time order; starts on the free plan."""
    churned_at: int | None = None
    trial_end: int | None = None

    def plan_at(self, ts: int) -> str:
        """The plan in force at `ts`."""
        current = "free"
        for since, plan in self.plans:
            if since > ts:
                break
            current = plan
        return current


@dataclass
class Journey:
    """Per-person facts other stages need (email, consent, profile updates)."""

    orders: list[tuple[int, float]] = field(default_factory=list)
    plan_changes: list[tuple[int, str]] = field(default_factory=list)
    trial_end: int | None = None
    activated: bool = False


def _pick_path(rng: random.Random, spec: str) -> str:
    if spec == "/blog/":
        return "/blog/" + rng.choice(t.BLOG_POSTS)
    if spec == "/docs/":
        return "/docs/" + rng.choice(t.DOCS_PAGES)
    return spec


def _next_path(rng: random.Random, path: str) -> str:
    if path.startswith("/blog/"):
        return _pick_path(rng, rng.choice(("/blog/", "/blog/", "/", "/pricing", "/features",
                                           "/templates")))
    if path == "/pricing":
        return rng.choice(("/features", "/customers", "/security", "/compare/kanban-tools",
                           "/", "/templates"))
    return _pick_path(rng, rng.choice((*t.SITE_PAGES, "/blog/", "/blog/", "/docs/")))


def browse(world: World, person: Person, ts: int, pages: int, ids: int, *,
           landing: str | None = None, first: bool = False,
           campaign: tuple[str, str, str] | None = None) -> int:
    """A run of page views from `ts`; returns the time of the last one."""
    rng = world.rng
    channel = person.channel
    path = _pick_path(rng, landing or rng.choice(channel.landings))
    referrer = rng.choice(channel.referrers) if first else ""
    if first and channel.source and channel.campaigns:
        campaign = (rng.choice(channel.campaigns), channel.source, channel.medium or "")
    for number in range(pages):
        details: dict[str, Any] = {"path": path, "ids": ids, "referrer": referrer}
        if number == 0 and campaign is not None:
            details["campaign"] = campaign
        world.add(ts, "web", person, "page", details)
        referrer = t.SITE + path
        if number < pages - 1:
            ts += rng.randint(15, 240) * SECOND
            path = _next_path(rng, path)
    return ts


def visitor(world: World, person: Person) -> None:
    """Someone who never signs up: a few sessions, some reach the signup form and leave."""
    rng = world.rng
    ts = world.daytime(person, person.first_seen, t.BROWSE_HOURS, 0.6)
    if not world.start <= ts <= world.end:
        ts = person.first_seen  # every visitor is seen at least once
    sessions = 1 + geometric(rng, 0.5)
    for number in range(sessions):
        pages = 1 + geometric(rng, 0.4)
        last = browse(world, person, ts, pages, ANON, first=number == 0)
        if rng.random() < 0.08:
            # Got as far as the signup form, and left.
            last = browse(world, person, last + rng.randint(20, 90) * SECOND, 2, ANON,
                          landing="/pricing")
            last += rng.randint(20, 90) * SECOND
            world.add(last, "web", person, "page",
                      {"path": "/signup", "ids": ANON, "referrer": t.SITE + "/pricing"})
        gap = int(rng.expovariate(1 / 3.5) * DAY) + HOUR
        ts = max(last + HOUR, world.daytime(person, last + gap, t.BROWSE_HOURS, 0.6))


def traits(person: Person, plan: str, at: int) -> dict[str, Any]:
    """The identify traits sent at signup."""
    company = person.company
    assert company is not None
    values: dict[str, Any] = {
        "email": person.email, "firstName": person.first_name, "lastName": person.last_name,
        "name": f"{person.first_name} {person.last_name}", "job_title": person.job_title,
        "plan": plan, "industry": company.industry, "interests": person.interests,
        "lead_source": "referral" if person.role == "member" else person.channel.lead_source,
        "lifetime_value": 0,
        "signup_date": _date(at), "createdAt": _iso_date_time(at),
        "company": {"id": company.group_id, "name": company.name},
        "address": {"city": _city(person), "country": person.country.code},
        "timezone": person.timezone, "locale": person.locale,
    }
    if person.phone:
        values["phone"] = person.phone
    return values


def company_traits(company: Company, plan: str, seats: int) -> dict[str, Any]:
    """The traits of a `group` call."""
    return {"name": company.name, "domain": company.domain, "industry": company.industry,
            "employees": company.employees, "plan": plan, "country": company.country.code,
            "seats": seats, "mrr": mrr(plan, seats)}


def mrr(plan: str, seats: int) -> int:
    """Monthly recurring revenue of a plan for `seats` people."""
    return t.PRICE_PER_SEAT.get(plan, 0) * max(seats, 1)


def signup(world: World, person: Person, account: Account, at: int, *,
           invited_by: Person | None = None) -> None:
    """Signup form (or invite acceptance), identify, Signed Up, and the group call."""
    rng = world.rng
    company = person.company
    assert company is not None
    form = "/invite/accept" if invited_by else "/signup"
    world.add(at - rng.randint(40, 150) * SECOND, "web", person, "page",
              {"path": form, "ids": ANON, "referrer": "" if invited_by else t.SITE + "/pricing"})
    plan = account.plan_at(at)
    world.add(at, "web", person, "identify", {"traits": traits(person, plan, at),
                                              "ids": USER_ANON})
    method = "invite" if invited_by else rng.choice(("email", "email", "google", "google",
                                                     "microsoft"))
    properties: dict[str, Any] = {"method": method, "plan": plan}
    if invited_by:
        properties["invited_by"] = invited_by.user_id
    world.track(at + 2 * SECOND, person, "Signed Up", properties)
    seats = sum(1 for m in company.members if m.signup_at is not None and m.signup_at <= at)
    world.add(at + 3 * SECOND, "app", person, "group",
              {"group_id": company.group_id, "traits": company_traits(company, plan, seats)})


def plan_account(world: World, company: Company, champion: Person, activated_at: int,
                 journey: Journey) -> Account:
    """Trial, purchase, upgrade and cancellation of the company's plan (champion's events)."""
    rng = world.rng
    account = Account(plans=[(champion.signup_at or activated_at, "free")])
    target = company.target_plan
    seats = max(1, len(company.members))
    if target == "free":
        if rng.random() < 0.3:
            start = activated_at + int(rng.expovariate(1 / 2) * DAY)
            if world.track(start, champion, "Trial Started", {"plan": "pro", "trial_days": 14}):
                journey.trial_end = start + 14 * DAY
                world.track(journey.trial_end, champion, "Trial Ended",
                            {"plan": "pro", "converted": False})
        return account
    if rng.random() < 0.7:
        start = activated_at + int(rng.expovariate(1 / 2) * DAY)
        trial_plan = "pro" if target != "enterprise" else "enterprise"
        world.track(start, champion, "Trial Started", {"plan": trial_plan, "trial_days": 14})
        journey.trial_end = start + 14 * DAY
        bought = journey.trial_end + rng.randint(0, 6 * HOUR)
    else:
        bought = activated_at + int(rng.expovariate(1 / 5) * DAY) + HOUR
    annual = rng.random() < 0.25
    cycle = "annual" if annual else "monthly"
    if not world.track(bought, champion, "Subscription Started",
                       {"plan": target, "seats": seats, "mrr": mrr(target, seats),
                        "billing_cycle": cycle, "currency": "USD"}):
        return account
    account.plans.append((bought, target))
    journey.plan_changes.append((bought, target))
    _group(world, champion, bought, target, seats)
    plan = target
    upgrade_at = (bought + rng.randint(10, 50) * DAY
                  if plan in ("starter", "pro") and rng.random() < 0.18 else None)
    churn_at = bought + rng.randint(10, 60) * DAY if rng.random() < 0.2 else None
    if upgrade_at and churn_at and churn_at < upgrade_at:
        upgrade_at = None
    if upgrade_at and world.track(upgrade_at, champion, "Subscription Upgraded", {
            "from_plan": plan, "to_plan": t.PLANS[t.PLANS.index(plan) + 1], "seats": seats,
            "mrr": mrr(t.PLANS[t.PLANS.index(plan) + 1], seats)}):
        plan = t.PLANS[t.PLANS.index(plan) + 1]
        account.plans.append((upgrade_at, plan))
        journey.plan_changes.append((upgrade_at, plan))
        _group(world, champion, upgrade_at, plan, seats)
    if churn_at and world.track(churn_at, champion, "Subscription Cancelled", {
            "plan": plan, "reason": rng.choice(("too expensive", "switched tool",
                                                "project ended", "missing features",
                                                "company closed"))}):
        account.plans.append((churn_at, "free"))
        account.churned_at = churn_at
        journey.plan_changes.append((churn_at, "free"))
        _group(world, champion, churn_at, "free", seats)
    invoice = bought
    while invoice <= (account.churned_at or world.end):
        current = account.plan_at(invoice)
        if current == "free":
            break
        revenue = float(mrr(current, seats) * (10 if annual else 1))
        order = {"order_id": f"inv_{rng.getrandbits(36):09x}", "revenue": revenue,
                 "currency": "USD",
                 "products": [{"product_id": f"plan_{current}", "name": f"{current.title()} plan",
                               "price": t.PRICE_PER_SEAT[current], "quantity": seats}]}
        if world.track(invoice + 20 * SECOND, champion, "Order Completed", order):
            journey.orders.append((invoice + 20 * SECOND, revenue))
        invoice += 365 * DAY if annual else 30 * DAY
    return account


def _group(world: World, champion: Person, at: int, plan: str, seats: int) -> None:
    """The app re-sends the company's traits when its plan changes."""
    company = champion.company
    assert company is not None
    world.add(at + 2 * SECOND, "app", champion, "group",
              {"group_id": company.group_id, "traits": company_traits(company, plan, seats)})


def use_product(world: World, person: Person, account: Account, journey: Journey,
                from_ts: int) -> None:
    """Working sessions from `from_ts` to the end of the window."""
    rng = world.rng
    midnights, weekdays = world.calendar.days(person.timezone)
    first_day, _ = world.calendar.locate(person.timezone, from_ts)
    activity = person.activity if journey.activated else person.activity * 0.25
    tau = rng.uniform(25, 90) if journey.activated else rng.uniform(2, 6)
    signed = person.signup_at or from_ts
    for day in range(first_day, len(midnights)):
        midnight = midnights[day]
        if midnight > world.end:
            break
        paying = account.plan_at(midnight) != "free"
        decay = math.exp(-(midnight - signed) / DAY / tau)
        chance = activity * ((0.6 if paying else 0.12) + (0.4 if paying else 0.88) * decay)
        if account.churned_at is not None and midnight > account.churned_at + 3 * DAY:
            chance *= 0.04
        if weekdays[day] >= 5:
            chance *= 0.2
        while rng.random() < chance:
            ts = midnight + world.clock_time(t.WORK_HOURS)
            if ts > from_ts:
                session(world, person, ts, journey)
            chance *= 0.35


def session(world: World, person: Person, ts: int, journey: Journey) -> None:
    """One working session: mostly on the web app, sometimes on the phone."""
    if ts > world.end:
        return
    rng = world.rng
    power = 3 if person.power_user else 1
    if person.mobile_id and rng.random() < 0.35:
        if not person.mobile_linked:
            # First use of the phone app: anonymous until the login links the two (some
            # installed it days before and looked around without logging in).
            opened = ts - (rng.randint(1, 4) * DAY if rng.random() < 0.4 else 0)
            if opened > (person.signup_at or ts):
                for name in ("Welcome", "Login") if opened < ts else ("Login",):
                    world.add(opened, "app", person, "screen", {"name": name, "ids": MOBILE})
                    opened += rng.randint(5, 30) * SECOND
            ts += rng.randint(10, 40) * SECOND
            if world.track(ts, person, "Logged In", {"method": "password", "device": "mobile"},
                           ids=USER_MOBILE):
                person.mobile_linked = True
            else:
                return
        for _ in range((1 + geometric(rng, 0.35)) * power):
            ts += rng.randint(5, 120) * SECOND
            world.add(ts, "app", person, "screen", {"name": rng.choice(t.SCREENS),
                                                    "ids": USER_MOBILE})
        if rng.random() < 0.3:
            world.track(ts + 30 * SECOND, person, "Feature Used",
                        {"feature": "Comments", "platform": "mobile"}, ids=USER_MOBILE)
        return
    if rng.random() < 0.65:
        world.track(ts, person, "Logged In", {"method": rng.choice(("password", "google",
                                                                    "sso", "magic_link"))})
    if journey.activated and rng.random() < (0.35 if not journey.orders else 0.06):
        ts += rng.randint(30, 300) * SECOND
        world.track(ts, person, "Project Created",
                    {"project_id": f"prj_{rng.getrandbits(32):08x}",
                     "template": rng.choice(t.PROJECT_TEMPLATES)})
    for _ in range((1 + geometric(rng, 0.33)) * power):
        ts += rng.randint(30, 600) * SECOND
        world.track(ts, person, "Feature Used", {"feature": rng.choice(t.FEATURES),
                                                 "platform": "web"})
    if rng.random() < 0.1:
        browse(world, person, ts + MINUTE, 1 + geometric(rng, 0.5), USER_ANON,
               landing="/docs/")
    if rng.random() < 0.004:
        name, price = rng.choice(t.ADDONS)
        order = {"order_id": f"ord_{rng.getrandbits(36):09x}", "revenue": price,
                 "currency": "USD",
                 "products": [{"product_id": name.lower().replace(" ", "-").replace(":", ""),
                               "name": name, "price": price, "quantity": 1}]}
        if world.track(ts + 2 * MINUTE, person, "Order Completed", order):
            journey.orders.append((ts + 2 * MINUTE, price))


def profile_updates(world: World, person: Person, journey: Journey) -> None:
    """identify calls from the app when plan or lifetime value change."""
    for at, plan in journey.plan_changes:
        world.add(at + SECOND, "app", person, "identify", {"traits": {"plan": plan},
                                                           "ids": USER})
    total = 0.0
    for at, revenue in sorted(journey.orders):
        total += revenue
        world.add(at + SECOND, "app", person, "identify",
                  {"traits": {"lifetime_value": round(total, 2)}, "ids": USER})


def _date(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat()


def _iso_date_time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _city(person: Person) -> str:
    cities = person.country.cities
    return cities[person.index % len(cities)]
