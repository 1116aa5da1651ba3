"""Who is in the demo workspace: companies, their people, and visitors who never sign up.

Only identity and profile are decided here (names, addresses, time zones, roles, arrival
times); what each person then does is `behaviour`'s business.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import random
import unicodedata
import uuid
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cadenza.demo import tables as t

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000

IDENTIFIED_SHARE = 0.58
"""Share of contacts who sign up within the window (the rest stay anonymous visitors)."""
COMPANIES_PER_CONTACT = 0.17
_COUNTRY_WEIGHTS = tuple(c.weight for c in t.COUNTRIES)
_CHANNEL_WEIGHTS = tuple(c.weight for c in t.CHANNELS)
T = TypeVar("T")


class LocalCalendar:
    """Local midnights (as UTC epoch ms) of every day in the window, per time zone."""

    def __init__(self, start_ms: int, end_ms: int) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self._days: dict[str, tuple[list[int], list[int]]] = {}

    def days(self, tz: str) -> tuple[list[int], list[int]]:
        """(midnights, weekdays) of the local dates that overlap the window."""
        cached = self._days.get(tz)
        if cached is not None:
            return cached
        zone = zoneinfo.ZoneInfo(tz)
        first = dt.datetime.fromtimestamp(self.start_ms / 1000, zone).date()
        last = dt.datetime.fromtimestamp(self.end_ms / 1000, zone).date()
        midnights: list[int] = []
        weekdays: list[int] = []
        day = first
        while day <= last:
            local = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
            midnights.append(int(local.timestamp() * 1000))
            weekdays.append(day.weekday())
            day += dt.timedelta(days=1)
        self._days[tz] = (midnights, weekdays)
        return midnights, weekdays

    def locate(self, tz: str, ms: int) -> tuple[int, int]:
        """(day index, ms since local midnight) of the instant `ms` in zone `tz`."""
        midnights, _ = self.days(tz)
        index = max(0, bisect.bisect_right(midnights, ms) - 1)
        return index, ms - midnights[index]


@dataclass
class Company:
    """An account: created by its champion's first `group` call."""

    index: int
    group_id: str
    name: str
    domain: str
    industry: str
    employees: int
    country: t.Country
    target_plan: str
    """The plan the company ends up buying if the window lasts long enough."""
    members: list[Person] = field(default_factory=list)


@dataclass
class Person:
    """One contact; anonymous until `signup_at` (None: never signs up)."""

    index: int
    country: t.Country
    timezone: str
    anonymous_id: str
    first_seen: int
    channel: t.Channel
    ip: str
    user_agent: str
    role: str = "visitor"
    """visitor, champion (created the company account) or member (invited)."""
    company: Company | None = None
    signup_at: int | None = None
    user_id: str | None = None
    first_name: str = ""
    last_name: str = ""
    email: str | None = None
    phone: str | None = None
    job_title: str = ""
    interests: list[str] = field(default_factory=list)
    mobile_id: str | None = None
    """Anonymous id of the mobile app, for people who also use it."""
    mobile_linked: bool = False
    """Has logged in on the phone (its anonymous id now belongs to the contact)."""
    activity: float = 0.0
    """Chance of a working session on a weekday, before decay."""
    power_user: bool = False
    bad_address: bool = False
    """The mailbox does not exist: the first email hard-bounces."""
    web_context: dict[str, Any] = field(default_factory=dict)
    mobile_context: dict[str, Any] = field(default_factory=dict)

    @property
    def locale(self) -> str:
        """The person's locale (from their country)."""
        return self.country.locale


def _weighted(rng: random.Random, items: Sequence[T], weights: Sequence[float]) -> T:
    return rng.choices(items, weights)[0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ascii(text: str) -> str:
    text = text.replace("ß", "ss").replace("ä", "ae").replace("ö", "oe").replace("ü", "ue")
    text = text.replace("Ä", "Ae").replace("Ö", "Oe").replace("Ü", "Ue")
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum())


def _arrival(rng: random.Random, start: int, end: int) -> int:
    """A first-visit time, denser towards the end of the window (a growing business)."""
    return start + int((end - start) * rng.random() ** 0.8)


class Names:
    """Unique company names, domains, emails and phones."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.companies: set[str] = set()
        self.domains: set[str] = set()
        self.emails: set[str] = set()
        self.phones: set[str] = set()

    def company(self, industry: str) -> str:
        rng = self.rng
        suffixes = t.INDUSTRY_SUFFIXES[industry]
        for attempt in itertools.count():
            if rng.random() < 0.7 and attempt < 20:
                name = f"{rng.choice(t.COMPANY_WORDS)} {rng.choice(suffixes)}"
            else:
                word = "".join(rng.choice(t.SYLLABLES) for _ in range(rng.randint(2, 3)))
                name = f"{word.capitalize()} {rng.choice(suffixes)}" if rng.random() < 0.5 \
                    else word.capitalize()
            if name not in self.companies:
                self.companies.add(name)
                return name
        raise AssertionError("unreachable")

    def domain(self, name: str, country: t.Country, industry: str) -> str:
        slug = _ascii(name.split()[0]) if self.rng.random() < 0.5 else _ascii(name)
        tlds = ["com", "com", country.tld] + (["io", "app"] if industry == "software" else [])
        for tld in [self.rng.choice(tlds), "com", "co", "net", *tlds]:
            domain = f"{slug}.{tld}"
            if domain not in self.domains:
                self.domains.add(domain)
                return domain
        domain = f"{slug}{len(self.domains)}.com"
        self.domains.add(domain)
        return domain

    def email(self, first: str, last: str, domain: str, freemail: bool) -> str:
        f, la = _ascii(first), _ascii(last)
        forms = ([f"{f}.{la}", f"{f[0]}{la}", f"{f}", f"{f}_{la}", f"{f}{la[0]}"]
                 if not freemail else [f"{f}.{la}", f"{f}{la}", f"{la}.{f}"])
        if freemail:
            forms.append(f"{f}.{la}{self.rng.randint(1, 99)}")
        for form in forms:
            address = f"{form}@{domain}"
            if address not in self.emails:
                self.emails.add(address)
                return address
        while True:
            address = f"{f}.{la}{self.rng.randint(100, 9999)}@{domain}"
            if address not in self.emails:
                self.emails.add(address)
                return address

    def phone(self, country: t.Country) -> str:
        while True:
            digits = "".join(str(self.rng.randrange(10)) for _ in range(country.phone_digits))
            number = self.rng.choice(country.phone_prefixes) + digits
            if number not in self.phones:
                self.phones.add(number)
                return number


def _company_size(rng: random.Random, employees: int) -> int:
    """How many of the company's people sign up (before scaling to the target)."""
    cap = max(1, min(60, employees // 3))
    return min(cap, int(rng.paretovariate(1.3)))


def _employees(rng: random.Random) -> int:
    band = rng.choices(((1, 10), (11, 50), (51, 200), (201, 1000), (1001, 10000)),
                       (34, 30, 20, 11, 5))[0]
    return int(math.exp(rng.uniform(math.log(band[0]), math.log(band[1]))))


def _target_plan(rng: random.Random, employees: int) -> str:
    if employees > 1000:
        weights = (45, 10, 25, 20)
    elif employees > 200:
        weights = (60, 14, 21, 5)
    elif employees > 10:
        weights = (74, 14, 11, 1)
    else:
        weights = (84, 12, 4, 0)
    return _weighted(rng, t.PLANS, weights)


def build_population(rng: random.Random, contacts: int, start: int, end: int
                     ) -> tuple[list[Company], list[Person]]:
    """Companies with their people, then anonymous visitors, `contacts` people in all."""
    names = Names(rng)
    identified = max(1, round(contacts * IDENTIFIED_SHARE))
    company_count = max(1, min(identified, round(contacts * COMPANIES_PER_CONTACT)))
    companies: list[Company] = []
    for index in range(company_count):
        industry = _weighted(rng, t.INDUSTRIES, t.INDUSTRY_WEIGHTS)
        country = _any_country(rng)
        employees = _employees(rng)
        name = names.company(industry)
        companies.append(Company(
            index=index, group_id=f"acct_{rng.getrandbits(40):010x}", name=name,
            domain=names.domain(name, country, industry), industry=industry,
            employees=employees, country=country, target_plan=_target_plan(rng, employees)))
    sizes = [_company_size(rng, c.employees) for c in companies]
    _scale(rng, sizes, [max(1, min(60, c.employees)) for c in companies], identified)
    people: list[Person] = []
    for company, size in zip(companies, sizes, strict=True):
        for seat in range(size):
            role = "champion" if seat == 0 else "member"
            country = company.country if rng.random() < 0.8 else _any_country(rng)
            person = _new_person(rng, len(people), country, start, end)
            person.role = role
            person.company = company
            company.members.append(person)
            _profile(rng, names, person)
            people.append(person)
    while len(people) < contacts:
        people.append(_new_person(rng, len(people), _any_country(rng), start, end))
    return companies, people


def new_company(rng: random.Random, names: Names, index: int) -> Company:
    """One more company, drawn as `build_population` draws them (the live demo's signups)."""
    industry = _weighted(rng, t.INDUSTRIES, t.INDUSTRY_WEIGHTS)
    country = _any_country(rng)
    employees = _employees(rng)
    name = names.company(industry)
    return Company(index=index, group_id=f"acct_{rng.getrandbits(40):010x}", name=name,
                   domain=names.domain(name, country, industry), industry=industry,
                   employees=employees, country=country,
                   target_plan=_target_plan(rng, employees))


def new_visitor(rng: random.Random, index: int, at: int) -> Person:
    """An anonymous visitor first seen at `at`."""
    return _new_person(rng, index, _any_country(rng), at, at)


def new_member(rng: random.Random, names: Names, index: int, at: int, company: Company,
               role: str) -> Person:
    """Someone of `company` (champion or member) about to sign up, with a full profile."""
    country = company.country if rng.random() < 0.8 else _any_country(rng)
    person = _new_person(rng, index, country, at, at)
    person.role = role
    person.company = company
    company.members.append(person)
    _profile(rng, names, person)
    return person


def _scale(rng: random.Random, sizes: list[int], caps: list[int], total: int) -> None:
    """Adjust team sizes in place towards `total`, each between 1 and its cap."""
    excess = sum(sizes) - total
    while excess > 0:
        candidates = [i for i, s in enumerate(sizes) if s > 1]
        for i in rng.sample(candidates, min(excess, len(candidates))):
            sizes[i] -= 1
            excess -= 1
    while excess < 0:
        # Bigger teams grow more (invites beget invites), up to their headcount.
        open_teams = [i for i, s in enumerate(sizes) if s < caps[i]]
        if not open_teams:
            return
        for i in rng.choices(open_teams, [sizes[i] for i in open_teams], k=-excess):
            if sizes[i] < caps[i]:
                sizes[i] += 1
                excess += 1


def _any_country(rng: random.Random) -> t.Country:
    return _weighted(rng, t.COUNTRIES, _COUNTRY_WEIGHTS)


def _new_person(rng: random.Random, index: int, country: t.Country, start: int, end: int
                ) -> Person:
    timezone = _weighted(rng, [z for z, _ in country.timezones],
                         [w for _, w in country.timezones])
    channel = _weighted(rng, t.CHANNELS, _CHANNEL_WEIGHTS)
    block = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    person = Person(index=index, country=country, timezone=timezone,
                    anonymous_id=_uuid(rng), first_seen=_arrival(rng, start, end),
                    channel=channel, ip=f"{block}.{rng.randint(1, 254)}",
                    user_agent=rng.choice(t.USER_AGENTS))
    person.web_context = {
        "ip": person.ip, "userAgent": person.user_agent, "locale": country.locale,
        "timezone": timezone, "library": {"name": "analytics.js", "version": "next-1.70.0"},
    }
    return person


def _profile(rng: random.Random, names: Names, person: Person) -> None:
    """Name, email, phone, title and product habits of someone who will sign up."""
    company = person.company
    assert company is not None
    country = person.country
    person.first_name = rng.choice(t.FIRST_NAMES[country.names])
    person.last_name = rng.choice(t.LAST_NAMES[country.names])
    small = company.employees <= 10
    freemail = rng.random() < (0.5 if small else 0.18)
    domain = (rng.choice(t.GLOBAL_FREEMAIL + country.freemail) if freemail
              else company.domain)
    person.email = names.email(person.first_name, person.last_name, domain, freemail)
    if rng.random() < (0.45 if person.role == "champion" else 0.25):
        person.phone = names.phone(country)
    founder = person.role == "champion" and (small or rng.random() < 0.15)
    person.job_title = rng.choice(t.FOUNDER_TITLES if founder else t.JOB_TITLES)
    person.interests = sorted(rng.sample(t.INTERESTS, rng.randint(1, 3)))
    person.user_id = f"usr_{100_000 + person.index * 7 + rng.randrange(7)}"
    person.power_user = rng.random() < 0.03
    person.activity = 0.9 if person.power_user else min(0.8, rng.betavariate(2.4, 4.2))
    if person.role == "member":
        person.activity *= 0.8
    person.bad_address = rng.random() < 0.012
    if rng.random() < 0.16:
        maker, model, kind, os_name, os_version = rng.choice(t.DEVICES)
        person.mobile_id = _uuid(rng)
        person.mobile_context = {
            "device": {"manufacturer": maker, "model": model, "type": kind},
            "os": {"name": os_name, "version": os_version},
            "app": {"name": t.PRODUCT, "version": "4.12.0", "build": "4120"},
            "library": {"name": f"analytics-{kind}", "version": "1.5.3"},
            "locale": country.locale, "timezone": person.timezone, "network": {"wifi": True},
        }
