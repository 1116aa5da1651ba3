"""Email and consent: decisions at signup, lifecycle mail, the weekly newsletter, bounces.

Marketing email needs consent: most people opt in at signup, people in the EU confirm by
double opt-in (a few never do), some decline; a few later unsubscribe or complain. Lifecycle
mail (welcome, confirmation, trial ending, receipts) is transactional and goes to everyone
whose address is not suppressed. A mailbox that does not exist hard-bounces once and its
address goes on the suppression list; a spam complaint does the same.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cadenza.contacts import ConsentStatus, SuppressionReason
from cadenza.demo import tables as t
from cadenza.demo.behaviour import Journey, browse
from cadenza.demo.population import DAY, HOUR, MINUTE, Person
from cadenza.demo.world import USER_ANON, PlannedConsent, PlannedSuppression, World

SECOND = 1000
TERMS_TEXT = "terms-2025-06"
MARKETING_TEXTS = ("email-marketing-v3", "email-marketing-v4")
"""The consent wording changed half-way through the window."""
SMS_TEXT = "sms-marketing-v2"
NEWSLETTER_HOUR_UTC = 14
OPEN_GIVEN_DELIVERED = (1.3, 3.4)
"""Beta distribution of each person's newsletter open rate (mean ~28%)."""
CLICK_GIVEN_OPEN = 0.12


@dataclass(frozen=True)
class Mail:
    """One email to one person."""

    at: int
    campaign_id: str
    name: str
    subject: str
    marketing: bool
    confirm_at: int | None = None
    """For the double opt-in confirmation: when the link is clicked (None: never)."""


def newsletter_sends(start: int, end: int) -> list[Mail]:
    """Every Tuesday at 14:00 UTC inside the window (the recipient is filled in later)."""
    day = dt.datetime.fromtimestamp(start / 1000, dt.UTC).replace(hour=0, minute=0, second=0,
                                                                   microsecond=0)
    day += dt.timedelta(days=(1 - day.weekday()) % 7)
    sends: list[Mail] = []
    while True:
        at = int(day.timestamp() * 1000) + NEWSLETTER_HOUR_UTC * HOUR
        if at > end:
            return sends
        if at >= start:
            subject = t.NEWSLETTER_SUBJECTS[len(sends) % len(t.NEWSLETTER_SUBJECTS)]
            sends.append(Mail(at, f"newsletter-{day.date().isoformat()}", "Weekly newsletter",
                              subject, marketing=True))
        day += dt.timedelta(days=7)


def plan_consent(world: World, person: Person) -> tuple[list[tuple[int, str]], int | None]:
    """Record the consent decisions of a new signup.

    Returns the marketing-email timeline [(from, status)] and, when double opt-in applies,
    when the confirmation link gets clicked (None: never confirmed, or no double opt-in).
    """
    rng = world.rng
    at = person.signup_at
    assert at is not None
    version = MARKETING_TEXTS[0] if at < (world.start + world.end) // 2 else MARKETING_TEXTS[1]
    index, ip = person.index, person.ip
    world.consent(PlannedConsent(at, index, "email", "transactional", ConsentStatus.OPTED_IN,
                                 "signup_form", TERMS_TEXT, ip))
    opt_in, pending = (0.0, 0.84) if person.country.eu else (0.78, 0.07)
    roll = rng.random()
    timeline: list[tuple[int, str]] = []
    confirm_at: int | None = None
    if roll < opt_in:
        timeline.append((at, "opted_in"))
        world.consent(PlannedConsent(at, index, "email", "marketing", ConsentStatus.OPTED_IN,
                                     "signup_form", version, ip))
    elif roll < opt_in + pending:
        timeline.append((at, "pending"))
        world.consent(PlannedConsent(at, index, "email", "marketing", ConsentStatus.PENDING,
                                     "signup_form", version, ip))
        if rng.random() < 0.8:
            confirm_at = at + min(3 * DAY, int(rng.expovariate(1 / 3) * HOUR) + 2 * MINUTE)
            timeline.append((confirm_at, "opted_in"))
            world.consent(PlannedConsent(confirm_at, index, "email", "marketing",
                                         ConsentStatus.OPTED_IN, "double_opt_in", version, ip))
    else:
        timeline.append((at, "opted_out"))
        world.consent(PlannedConsent(at, index, "email", "marketing", ConsentStatus.OPTED_OUT,
                                     "signup_form", version, ip))
    if person.phone:
        roll = rng.random()
        if roll < 0.45:
            sms_at = at + int(rng.expovariate(1 / 4) * DAY)
            world.consent(PlannedConsent(sms_at, index, "sms", "marketing",
                                         ConsentStatus.OPTED_IN, "profile_settings", SMS_TEXT,
                                         ip))
            if rng.random() < 0.1:
                world.consent(PlannedConsent(sms_at + rng.randint(2, 40) * DAY, index, "sms",
                                             "marketing", ConsentStatus.OPTED_OUT,
                                             "sms_keyword"))
        elif roll < 0.55:
            world.consent(PlannedConsent(at, index, "sms", "marketing", ConsentStatus.OPTED_OUT,
                                         "signup_form", SMS_TEXT, ip))
    return timeline, confirm_at


def _status(timeline: list[tuple[int, str]], ts: int) -> str:
    current = "unknown"
    for since, status in timeline:
        if since > ts:
            break
        current = status
    return current


def email_program(world: World, person: Person, journey: Journey, sends: list[Mail]) -> None:
    """Every email this person gets and what they do with it."""
    rng = world.rng
    signup = person.signup_at
    assert signup is not None
    assert person.email is not None
    timeline, confirm_at = plan_consent(world, person)
    mails = [Mail(signup + MINUTE, "welcome", "Welcome", f"Welcome to {t.PRODUCT}!",
                  marketing=False)]
    if timeline[0][1] == "pending":
        mails.append(Mail(signup + 30 * SECOND, "double-opt-in", "Confirm subscription",
                          "Please confirm your subscription", False, confirm_at))
    if journey.trial_end is not None:
        mails.append(Mail(journey.trial_end - 3 * DAY, "trial-ending", "Trial ending",
                          "Your trial ends in 3 days", marketing=False))
    for at, revenue in journey.orders:
        mails.append(Mail(at + MINUTE, "receipt", "Receipt",
                          f"Your {t.PRODUCT} receipt (${revenue:,.2f})", marketing=False))
    mails.extend(m for m in sends if m.at > signup)
    mails.sort(key=lambda m: m.at)
    open_rate = rng.betavariate(*OPEN_GIVEN_DELIVERED)
    for mail in mails:
        if mail.marketing and _status(timeline, mail.at) != "opted_in":
            continue
        props = {"campaign_id": mail.campaign_id, "campaign_name": mail.name,
                 "email_subject": mail.subject, "email_id": f"{mail.campaign_id}.{person.user_id}",
                 "email_type": "marketing" if mail.marketing else "transactional"}
        sent = mail.at + rng.randint(1, 900 if mail.marketing else 20) * SECOND
        if person.bad_address:
            if world.track(sent + 2 * SECOND, person, "Email Bounced",
                           {**props, "bounce_type": "hard",
                            "reason": "550 5.1.1 mailbox does not exist"}, source="email"):
                world.suppressions.append(PlannedSuppression(
                    sent, "email", person.email, SuppressionReason.HARD_BOUNCE,
                    f"550 5.1.1 on {mail.campaign_id}"))
            return
        if rng.random() < 0.004:
            world.track(sent + 2 * SECOND, person, "Email Bounced",
                        {**props, "bounce_type": "soft", "reason": "452 4.2.2 mailbox full"},
                        source="email")
            continue
        if not world.track(sent, person, "Email Delivered", props, source="email"):
            return
        if mail.campaign_id == "double-opt-in":
            if mail.confirm_at is not None:
                world.track(mail.confirm_at - 20 * SECOND, person, "Email Opened", props,
                            source="email")
                world.track(mail.confirm_at, person, "Email Link Clicked",
                            {**props, "link_url": t.SITE + "/subscribe/confirm"},
                            source="email")
            continue
        rate = open_rate if mail.marketing else 0.65
        if rng.random() >= rate:
            continue
        opened = world.reading_delay(person, sent, 2.0)
        world.track(opened, person, "Email Opened", props, source="email")
        if rng.random() < (CLICK_GIVEN_OPEN if mail.marketing else 0.3):
            _click(world, person, mail, props, opened + rng.randint(5, 90) * SECOND)
        if not mail.marketing:
            continue
        if rng.random() < 0.011:
            at = opened + rng.randint(10, 60) * SECOND
            if world.track(at, person, "Email Unsubscribed", props, source="email"):
                timeline.append((at, "opted_out"))
                world.consent(PlannedConsent(at, person.index, "email", "marketing",
                                             ConsentStatus.OPTED_OUT, "unsubscribe_link",
                                             None, person.ip))
        elif rng.random() < 0.002:
            at = opened + rng.randint(10, 120) * SECOND
            if world.track(at, person, "Email Marked as Spam", props, source="email"):
                timeline.append((at, "opted_out"))
                world.consent(PlannedConsent(at, person.index, "email", "marketing",
                                             ConsentStatus.OPTED_OUT, "spam_complaint"))
                world.suppressions.append(PlannedSuppression(
                    at, "email", person.email, SuppressionReason.COMPLAINT,
                    f"feedback-loop report on {mail.campaign_id}"))
                return


def _click(world: World, person: Person, mail: Mail, props: dict[str, str], at: int) -> None:
    rng = world.rng
    path = ("/blog/" + rng.choice(t.BLOG_POSTS) if mail.marketing
            else rng.choice(("/docs/getting-started", "/templates", "/pricing")))
    source = "newsletter" if mail.marketing else "lifecycle"
    link = (f"{t.SITE}{path}?utm_source={source}&utm_medium=email"
            f"&utm_campaign={mail.campaign_id}")
    if world.track(at, person, "Email Link Clicked", {**props, "link_url": link},
                   source="email"):
        browse(world, person, at + 3 * SECOND, 1 + (rng.random() < 0.4), USER_ANON,
               landing=path, campaign=(mail.campaign_id, source, "email"))
