"""What happens in the live demo: short scenarios of the demo business, as timed messages.

Each scenario is a few Segment messages spread over the next minutes or hours, as the web
site, the app and the billing system would send them: a visitor signs up and creates a first
project; a customer works in the app; a checkout is completed, or left for later, or never;
a lead downloads a guide and comes back to the pricing page; a customer cancels. Existing
customers come from the workspace (`load_cast`), newcomers are drawn like the generator's.
Event and attribute names are the generator's (`behaviour`, `email`), plus `Checkout
Started`, `Form Submitted` and `Demo Booked` and the `lead_score` trait, which the demo
journeys listen to.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa

from cadenza.demo import tables as t
from cadenza.demo.behaviour import company_traits, mrr, traits
from cadenza.demo.messages import build, iso
from cadenza.demo.population import (
    DAY,
    MINUTE,
    Company,
    Names,
    Person,
    new_company,
    new_member,
    new_visitor,
)
from cadenza.demo.world import ANON, USER_ANON
from cadenza.store import Store, schema

SECOND = 1000
PAID_PLANS = ("starter", "pro", "enterprise")
FORMS = (("guide-remote-rituals", "Guide: Remote team rituals"),
         ("webinar-automation-recipes", "Webinar: 10 automation recipes"),
         ("template-pack-agency", "Template pack: Agency projects"),
         ("checklist-client-onboarding", "Checklist: Client onboarding"))
CANCEL_REASONS = ("too expensive", "switched tool", "project ended", "missing features",
                  "company closed")
_SERVER = {"library": {"name": "analytics-node", "version": "2.1.2"}}
_BILLING = {"library": {"name": "quillstack-billing", "version": "3.4.0"}}

Emit = Callable[[int, str, dict[str, Any], Callable[[], None] | None], None]
"""emit(at, source, message, then): schedule a message; `then` runs when it is sent."""


@dataclass
class Member:
    """A signed-up person the stream can act for."""

    user_id: str
    plan: str
    email: str | None = None
    group_id: str | None = None
    seats: int = 1


@dataclass
class Cast:
    """Who the stream can act for: signed-up people, and every email address in use."""

    members: list[Member]
    emails: set[str]


def load_cast(store: Store, limit: int = 20_000) -> Cast:
    """Signed-up contacts of the workspace (oldest first, at most `limit`) and their plans."""
    c, m, co = schema.contacts, schema.company_members, schema.companies
    query = (sa.select(c.c.user_id, c.c.email, c.c.attributes, co.c.group_id, co.c.attributes)
             .select_from(c.outerjoin(m, m.c.contact_id == c.c.id)
                          .outerjoin(co, co.c.id == m.c.company_id))
             .where(c.c.user_id.is_not(None), c.c.merged_into.is_(None))
             .order_by(c.c.id).limit(limit))
    members: dict[str, Member] = {}
    with store.read() as conn:
        for user_id, email, attributes, group_id, company in conn.execute(query):
            if user_id in members:  # in several companies: the first will do
                continue
            plan = (attributes or {}).get("plan")
            seats = (company or {}).get("seats")
            members[user_id] = Member(
                user_id, plan if plan in t.PLANS else "free", email, group_id,
                seats if isinstance(seats, int) and seats > 0 else 1)
        emails = {row[0] for row in conn.execute(sa.select(c.c.email)
                                                 .where(c.c.email.is_not(None)))}
    return Cast(list(members.values()), emails)


WEIGHTS: Mapping[str, int] = MappingProxyType({
    "signup": 14, "invite": 6, "session": 34, "checkout": 12, "lead": 12, "cancel": 4,
    "browse": 18})
"""Relative frequency of each scenario."""


class Scenarios:
    """Draws scenarios and schedules their messages through `emit`."""

    def __init__(self, rng: random.Random, cast: Cast, emit: Emit) -> None:
        self.rng = rng
        self.members = list(cast.members)
        self.names = Names(rng)
        self.names.emails.update(cast.emails)
        self.emit = emit
        self.people = 0
        self._plays: dict[str, Callable[[int], None]] = {
            "signup": self.signup, "invite": self.invite, "session": self.session,
            "checkout": self.checkout, "lead": self.lead, "cancel": self.cancel,
            "browse": self.browse}

    def play(self, at: int) -> str:
        """Start a scenario drawn by weight at `at`; returns its name."""
        name = self.rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
        self._plays[name](at)
        return name

    # --- scenarios ---------------------------------------------------------------------------

    def signup(self, at: int) -> None:
        """A visitor looks at pricing, signs up and, usually, creates a first project."""
        rng = self.rng
        company = new_company(rng, self.names, self.people)
        person = self._newcomer(at, company, "champion")
        last = self._pages(person, at, ("/", "/pricing", "/signup"), ANON, first=True)
        signed = last + rng.randint(40, 150) * SECOND
        self._signup(person, signed, "free", rng.choice(("email", "google", "microsoft")),
                     company_traits(company, "free", 1))
        if rng.random() < 0.65:
            self._activate(person, signed + rng.randint(2, 20) * MINUTE)
        if rng.random() < 0.2:
            started = signed + rng.randint(10, 40) * MINUTE
            self._track(person, started, "Trial Started", {"plan": "pro", "trial_days": 14})

    def invite(self, at: int) -> None:
        """A customer invites a teammate, who joins the team's plan."""
        rng = self.rng
        inviter = self._member(lambda m: m.group_id is not None)
        if inviter is None or inviter.group_id is None:
            self.signup(at)
            return
        # A stand-in for the inviter's company: its id and mail domain are the real ones.
        company = new_company(rng, self.names, self.people)
        company.group_id = inviter.group_id
        if inviter.email and "@" in inviter.email:
            company.domain = inviter.email.split("@", 1)[1]
        invitee = self._newcomer(at, company, "member")
        self._server(inviter, at, "Invited Teammate",
                     {"invitee_email": invitee.email,
                      "role": "admin" if rng.random() < 0.15 else "member"})
        accepted = at + rng.randint(3, 40) * MINUTE
        self._pages(invitee, accepted - 90 * SECOND, ("/invite/accept",), ANON)
        inviter.seats += 1
        self._signup(invitee, accepted, inviter.plan, "invite",
                     {"plan": inviter.plan, "seats": inviter.seats,
                      "mrr": mrr(inviter.plan, inviter.seats)},
                     invited_by=inviter.user_id, seats=inviter.seats)
        if rng.random() < 0.5:
            self._activate(invitee, accepted + rng.randint(2, 30) * MINUTE)

    def session(self, at: int) -> None:
        """A customer logs in and works: features, sometimes a new project."""
        rng = self.rng
        member = self._member()
        if member is None:
            self.signup(at)
            return
        self._server(member, at, "Logged In",
                     {"method": rng.choice(("password", "google", "sso", "magic_link"))})
        ts = at
        for _ in range(rng.randint(1, 4)):
            ts += rng.randint(30, 300) * SECOND
            self._server(member, ts, "Feature Used",
                         {"feature": rng.choice(t.FEATURES), "platform": "web"})
        if rng.random() < 0.1:
            self._server(member, ts + rng.randint(30, 300) * SECOND, "Project Created",
                         {"project_id": f"prj_{rng.getrandbits(32):08x}",
                          "template": rng.choice(t.PROJECT_TEMPLATES)})

    def checkout(self, at: int) -> None:
        """A checkout (an add-on, or a plan for a free team): paid at once, later, or never."""
        rng = self.rng
        member = self._member()
        if member is None:
            self.signup(at)
            return
        order_id = f"ord_{rng.getrandbits(36):09x}"
        plan: str | None = None
        if member.plan == "free" and rng.random() < 0.5:
            plan = rng.choice(("starter", "pro", "pro"))
            price = t.PRICE_PER_SEAT[plan]
            products = [{"product_id": f"plan_{plan}", "name": f"{plan.title()} plan",
                         "price": price, "quantity": member.seats}]
            value = float(price * member.seats)
        else:
            name, amount = rng.choice(t.ADDONS)
            products = [{"product_id": name.lower().replace(" ", "-").replace(":", ""),
                         "name": name, "price": amount, "quantity": 1}]
            value = amount
        cart = {"order_id": order_id, "value": value, "revenue": value, "currency": "USD",
                "products": products}
        self._server(member, at, "Checkout Started", cart, _BILLING)
        roll = rng.random()
        if roll < 0.55:
            paid = at + rng.randint(1, 15) * MINUTE
        elif roll < 0.67:
            paid = at + rng.randint(65, 240) * MINUTE  # after the reminder
        else:
            return
        order = {k: cart[k] for k in ("order_id", "revenue", "currency", "products")}
        self._server(member, paid, "Order Completed", order, _BILLING)
        if plan is not None:
            self._subscribe(member, paid + 5 * SECOND, plan)

    def lead(self, at: int) -> None:
        """A visitor reads the blog and leaves an email for a guide; may come back, may book
        a demo."""
        rng = self.rng
        person = self._visitor(at)
        path = "/blog/" + rng.choice(t.BLOG_POSTS)
        last = self._pages(person, at, (path, "/blog/" + rng.choice(t.BLOG_POSTS)), ANON,
                           first=True)
        form_id, form_name = rng.choice(FORMS)
        submitted = last + rng.randint(30, 180) * SECOND
        self._web(person, submitted, "track", {"event": "Form Submitted", "properties": {
            "form_id": form_id, "form_name": form_name, "page": path}})
        country = person.country
        first = rng.choice(t.FIRST_NAMES[country.names])
        family = rng.choice(t.LAST_NAMES[country.names])
        domain = rng.choice(t.GLOBAL_FREEMAIL + country.freemail)
        score = rng.randint(10, 35)
        self._web(person, submitted + SECOND, "identify", {"traits": {
            "email": self.names.email(first, family, domain, True), "firstName": first,
            "lastName": family, "lead_source": person.channel.lead_source,
            "lead_score": score, "timezone": person.timezone, "locale": country.locale}})
        if rng.random() < 0.55:
            back = submitted + rng.randint(5, 45) * MINUTE
            last = self._pages(person, back, ("/pricing", "/customers"), ANON)
            score += rng.randint(20, 35)
            self._web(person, last + SECOND, "identify", {"traits": {"lead_score": score}})
            if rng.random() < 0.3:
                booked = last + rng.randint(2, 20) * MINUTE
                meeting = booked + rng.randint(1, 5) * DAY
                self._web(person, booked, "track", {"event": "Demo Booked", "properties": {
                    "meeting_at": iso(meeting), "source": "pricing-page"}})

    def cancel(self, at: int) -> None:
        """A paying customer cancels; one in ten changes their mind within the hour."""
        rng = self.rng
        member = self._member(lambda m: m.plan in PAID_PLANS)
        if member is None:
            self.session(at)
            return
        old = member.plan
        self._server(member, at, "Subscription Cancelled",
                     {"plan": old, "reason": rng.choice(CANCEL_REASONS)}, _BILLING)
        self._plan_changed(member, at + SECOND, "free")
        if rng.random() < 0.1:
            self._subscribe(member, at + rng.randint(5, 50) * MINUTE, old)

    def browse(self, at: int) -> None:
        """An anonymous visitor reads a few pages and leaves."""
        rng = self.rng
        person = self._visitor(at)
        pages = [rng.choice((*t.SITE_PAGES, "/blog/" + rng.choice(t.BLOG_POSTS)))
                 for _ in range(rng.randint(1, 4))]
        self._pages(person, at, tuple(pages), ANON, first=True)

    # --- pieces ------------------------------------------------------------------------------

    def _member(self, wanted: Callable[[Member], bool] | None = None) -> Member | None:
        """A random member (matching `wanted`), or None when there is none."""
        pool = self.members if wanted is None else [m for m in self.members if wanted(m)]
        return self.rng.choice(pool) if pool else None

    def _visitor(self, at: int) -> Person:
        self.people += 1
        return new_visitor(self.rng, self.people, at)

    def _newcomer(self, at: int, company: Company, role: str) -> Person:
        self.people += 1
        person = new_member(self.rng, self.names, self.people, at, company, role)
        # Eight digits: never one of the generator's six-digit user ids.
        person.user_id = f"usr_{self.rng.randrange(10**7, 10**8)}"
        return person

    def _signup(self, person: Person, at: int, plan: str, method: str,
                company: dict[str, Any], *, invited_by: str | None = None,
                seats: int = 1) -> None:
        """identify, Signed Up and group (with `company` traits); the member joins the cast
        once Signed Up is sent."""
        assert person.user_id is not None
        assert person.company is not None
        person.signup_at = at
        values = traits(person, plan, at)
        if invited_by:  # the team's company already has its name: do not rename it
            values.pop("company")
        self._web(person, at, "identify", {"traits": values, "ids": USER_ANON})
        properties: dict[str, Any] = {"method": method, "plan": plan}
        if invited_by:
            properties["invited_by"] = invited_by
        member = Member(person.user_id, plan, person.email, person.company.group_id, seats)
        self.emit(at + 2 * SECOND, "app", self._build(
            person, at + 2 * SECOND, "track", {"event": "Signed Up", "properties": properties}),
            lambda: self.members.append(member))
        self.emit(at + 3 * SECOND, "app", self._build(person, at + 3 * SECOND, "group", {
            "group_id": person.company.group_id, "traits": company}), None)

    def _activate(self, person: Person, at: int) -> None:
        rng = self.rng
        self._track(person, at, "Project Created",
                    {"project_id": f"prj_{rng.getrandbits(32):08x}",
                     "template": rng.choice(t.PROJECT_TEMPLATES)})
        for step in range(rng.randint(1, 3)):
            self._track(person, at + (step + 1) * rng.randint(30, 240) * SECOND,
                        "Feature Used", {"feature": rng.choice(t.FEATURES), "platform": "web"})

    def _subscribe(self, member: Member, at: int, plan: str) -> None:
        self._server(member, at, "Subscription Started",
                     {"plan": plan, "seats": member.seats, "mrr": mrr(plan, member.seats),
                      "billing_cycle": "monthly", "currency": "USD"}, _BILLING)
        self._plan_changed(member, at + SECOND, plan)

    def _plan_changed(self, member: Member, at: int, plan: str) -> None:
        """The app's identify (and group) after a plan change; the cast follows when sent."""
        message = self._server_message(member, at, "identify", {"traits": {"plan": plan}})

        def changed() -> None:
            member.plan = plan

        self.emit(at, "app", message, changed)
        if member.group_id is not None:
            self.emit(at + SECOND, "app", self._server_message(member, at + SECOND, "group", {
                "groupId": member.group_id,
                "traits": {"plan": plan, "seats": member.seats, "mrr": mrr(plan, member.seats)}
            }), None)

    def _pages(self, person: Person, at: int, paths: tuple[str, ...], ids: int, *,
               first: bool = False) -> int:
        """Page views from `at`, a little apart; returns the time of the last one."""
        rng = self.rng
        referrer = rng.choice(person.channel.referrers) if first else ""
        campaign = None
        if first and person.channel.source and person.channel.campaigns:
            campaign = (rng.choice(person.channel.campaigns), person.channel.source,
                        person.channel.medium or "")
        ts = at
        for number, path in enumerate(paths):
            details: dict[str, Any] = {"path": path, "ids": ids, "referrer": referrer}
            if number == 0 and campaign is not None:
                details["campaign"] = campaign
            self.emit(ts, "web", self._build(person, ts, "page", details), None)
            referrer = t.SITE + path
            if number < len(paths) - 1:
                ts += rng.randint(15, 120) * SECOND
        return ts

    def _track(self, person: Person, at: int, event: str, properties: dict[str, Any]) -> None:
        self.emit(at, "app", self._build(person, at, "track",
                                         {"event": event, "properties": properties}), None)

    def _web(self, person: Person, at: int, kind: str, details: dict[str, Any]) -> None:
        """A message from the web site (browser ids: anonymous, plus the user id once known)."""
        ids = USER_ANON if person.signup_at is not None else ANON
        self.emit(at, "web", self._build(person, at, kind, {"ids": ids, **details}), None)

    def _build(self, person: Person, at: int, kind: str, details: dict[str, Any]
               ) -> dict[str, Any]:
        return build((at, 0, "web" if details.get("ids") in (ANON, USER_ANON) else "app", 0,
                      kind, details), [person], self.rng)

    def _server(self, member: Member, at: int, event: str, properties: dict[str, Any],
                library: dict[str, Any] | None = None) -> None:
        """A track call from the app's (or billing's) servers, by user id."""
        self.emit(at, "app", self._server_message(
            member, at, "track", {"event": event, "properties": properties}, library), None)

    def _server_message(self, member: Member, at: int, kind: str, fields: dict[str, Any],
                        library: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"type": kind, "messageId": str(uuid.UUID(int=self.rng.getrandbits(128),
                                                         version=4)),
                "timestamp": iso(at), "userId": member.user_id,
                "context": dict(library or _SERVER), **fields}


__all__ = ["Cast", "Member", "Scenarios", "load_cast"]
