"""Brand and compliance checks on content."""

from __future__ import annotations

import pytest

from cadenza.errors import ValidationFailed
from cadenza.governance.compliance import (
    Content,
    RuleSet,
    blocking,
    check_content,
    reading_grade,
    syllables,
)

GOOD = """<html><body><p>Hello {{ contact.first_name }}, our spring guide is out.</p>
<p><a href="https://example.com/guide">Read it</a></p>
<img src="https://example.com/hero.png" alt="Spring guide cover">
<p>Acme Inc, 1 Main Street, Springfield</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>"""
RULES = RuleSet.from_json({
    "postal_address": "Acme Inc, 1 Main Street, Springfield",
    "banned_phrases": ["best in the world"],
    "required_phrases": ["Acme"],
    "disclaimers": [{"text": "Sie erhalten diese E-Mail", "regions": ["de"]},
                    {"text": "Terms apply.", "purposes": ["promo"]}],
})


def _checks(html: str = GOOD, **kwargs: str) -> dict[str, str]:
    content = Content("email", html=html, subject=kwargs.pop("subject", "Spring guide"),
                      **kwargs)
    return {f.check: f.severity for f in check_content(RULES, content)}


def test_a_compliant_email_has_no_findings() -> None:
    assert _checks() == {}


def test_marketing_email_without_an_unsubscribe_link_or_address_is_blocked() -> None:
    html = GOOD.replace('href="{{ unsubscribe_url }}"', 'href="https://example.com"')
    html = html.replace("1 Main Street", "2 Side Road")
    findings = check_content(RULES, Content("email", html=html))
    assert {f.check for f in blocking(findings)} == {"unsubscribe", "postal_address"}


def test_transactional_email_needs_no_unsubscribe_link() -> None:
    html = GOOD.replace('href="{{ unsubscribe_url }}"', 'href="https://example.com"')
    assert "unsubscribe" not in {f.check for f in check_content(
        RULES, Content("email", purpose="transactional", html=html))}


@pytest.mark.parametrize("subject", ["The BEST in the world", "best  in the\nworld!"])
def test_banned_phrases_are_found_in_any_case_and_spacing(subject: str) -> None:
    assert _checks(subject=subject.replace("\n", " ")).get("banned_phrases") == "error"


def test_banned_phrases_match_whole_words_only() -> None:
    rules = RuleSet.from_json({"banned_phrases": ["free"]})
    found = check_content(rules, Content("sms", text="Carefree spring"))
    assert not [f for f in found if f.check == "banned_phrases"]


def test_disclaimers_apply_by_locale_region_and_purpose() -> None:
    assert _checks(locale="de-DE").get("disclaimers") == "error"
    assert "disclaimers" not in _checks(locale="fr")
    assert _checks(purpose="promo").get("disclaimers") == "error"
    eu = RuleSet.from_json({"disclaimers": [{"text": "EU notice", "regions": ["EU"]}]})
    assert check_content(eu, Content("sms", text="hi", locale="it"))[0].check == "disclaimers"


def test_bad_links_and_images_without_alt_are_reported() -> None:
    html = GOOD.replace('alt="Spring guide cover"', "") + (
        '<a href="javascript:alert(1)">x</a><a>empty</a><img src="d.png" alt="">'
        '<a href="https://example.com/{{ contact.id }}">ok</a>')
    checks = check_content(RULES, Content("email", html=html))
    links = [f.message for f in checks if f.check == "links"]
    assert len(links) == 2
    assert any("javascript" in m for m in links)
    assert [f.check for f in checks if f.check == "image_alt"] == ["image_alt"]


def test_a_link_checker_reports_dead_links() -> None:
    dead = {"https://example.com/guide": "HTTP 404"}
    findings = check_content(RULES, Content("email", html=GOOD), link_checker=dead.get)
    assert [f.message for f in findings] == [
        "link 'https://example.com/guide' is broken: HTTP 404"]


def test_spam_words_and_reading_level_warn_without_blocking() -> None:
    long = ("Notwithstanding considerable organisational complexities, "
            "interdepartmental collaboration methodologies necessitate comprehensive "
            "institutionalisation ") * 4
    html = GOOD.replace("our spring guide is out.", "ACT NOW, you are a winner! " + long)
    findings = check_content(RULES, Content("email", html=html))
    assert {f.check for f in findings} == {"spam_words", "reading_level"}
    assert blocking(findings) == []


def test_severity_can_be_raised_or_turned_off() -> None:
    rules = RuleSet.from_json({"severity": {"spam_words": "error", "image_alt": "off"}})
    findings = check_content(rules, Content(
        "sms", text="You are a winner", html=""))
    assert [(f.check, f.severity) for f in findings] == [("spam_words", "error")]


def test_reading_grade_ranks_plain_text_below_dense_text() -> None:
    plain = "We made a new guide. It is short. Read it today. It will help your team."
    dense = ("Comprehensive organisational transformation initiatives necessitate "
             "interdisciplinary collaboration and sophisticated methodological frameworks.")
    assert reading_grade(plain) < 5 < reading_grade(dense)
    assert syllables("unsubscribe") == 3
    assert syllables("a") == 1


@pytest.mark.parametrize(("rules", "field"), [
    ({"severity": {"colour": "error"}}, "rules.severity.colour"),
    ({"severity": {"links": "fatal"}}, "rules.severity.links"),
    ({"banned_phrases": "free"}, "rules.banned_phrases"),
    ({"banned_phrases": ["ok", ""]}, "rules.banned_phrases.1"),
    ({"disclaimers": [{"regions": ["EU"]}]}, "rules.disclaimers.0"),
    ({"max_grade": 0}, "rules.max_grade"),
    ({"shouting": True}, "rules.shouting"),
])
def test_bad_rule_sets_name_the_field(rules: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        RuleSet.from_json(rules)
    assert caught.value.field == field


def test_hostile_html_does_not_break_the_checker() -> None:
    for html in ("<", "<a href=", "\x00<html>", "<" * 10_000, "<div>" * 5_000):
        check_content(RULES, Content("email", html=html))
