"""Brand and compliance checks on content before it is published.

A rule set (YAML/JSON, stored per workspace) lists checks, each with a severity: an `error`
blocks publishing, a `warning` is shown. The checks:

    unsubscribe        marketing email links to {{ unsubscribe_url }}          (error)
    postal_address     marketing email contains the sender's postal address   (error)
    banned_phrases     none of these phrases appear (whole words, any case)   (error)
    required_phrases   all of these appear                                     (error)
    disclaimers        text required for a locale/region or a purpose         (error)
    links              every link is http(s), mailto:, tel: or a template
                       expression, and (when a checker is given) answers      (error)
    image_alt          every <img> has a non-empty alt                        (warning)
    spam_words         common spam-trigger words                              (warning)
    reading_level      Flesch-Kincaid grade at most `max_grade`               (warning)

HTML is parsed with lxml; syllables for the reading level come from pyphen's hyphenation
dictionaries (textstat would need NLTK data downloaded at run time, which Cadenza never does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import lxml.html  # type: ignore[import-untyped]
import pyphen
from lxml import etree

from cadenza.errors import ValidationFailed

SEVERITIES = ("error", "warning", "off")
CHECKS = ("unsubscribe", "postal_address", "banned_phrases", "required_phrases", "disclaimers",
          "links", "image_alt", "spam_words", "reading_level")
DEFAULT_SEVERITY = {"unsubscribe": "error", "postal_address": "error",
                    "banned_phrases": "error", "required_phrases": "error",
                    "disclaimers": "error", "links": "error", "image_alt": "warning",
                    "spam_words": "warning", "reading_level": "warning"}
SPAM_WORDS = ("100% free", "act now", "as seen on", "buy now", "cash bonus", "click here",
              "congratulations", "double your", "earn money", "eliminate debt", "free gift",
              "guaranteed", "limited time", "lowest price", "make money", "miracle",
              "no credit check", "no obligation", "once in a lifetime", "risk-free",
              "urgent", "winner", "you have been selected", "$$$")
"""Phrases spam filters weigh against a message (a starting list; rule sets add their own)."""
_TEMPLATE_EXPR = re.compile(r"^\s*\{\{.*\}\}\s*$", re.S)
_SAFE_SCHEMES = ("http://", "https://", "mailto:", "tel:")
MAX_PHRASES = 500


@dataclass(frozen=True)
class Disclaimer:
    """Text that must appear when the content's locale/region or purpose matches."""

    text: str
    regions: tuple[str, ...] = ()
    """Locales or regions (`de`, `fr-CA`, `EU`) it applies to; empty means all."""
    purposes: tuple[str, ...] = ()
    """Purposes (marketing, a topic) it applies to; empty means all."""


@dataclass(frozen=True)
class RuleSet:
    """A workspace's checks; every field has a safe default."""

    severity: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SEVERITY))
    """Severity per check: error, warning or off."""
    postal_address: str = ""
    """The sender's postal address as it must appear (empty: the check only warns)."""
    banned_phrases: tuple[str, ...] = ()
    required_phrases: tuple[str, ...] = ()
    disclaimers: tuple[Disclaimer, ...] = ()
    spam_words: tuple[str, ...] = SPAM_WORDS
    max_grade: float = 9.0
    """Highest Flesch-Kincaid grade before `reading_level` warns."""
    region_groups: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {
        "EU": ("at", "be", "bg", "hr", "cy", "cz", "dk", "ee", "fi", "fr", "de", "gr", "hu",
               "ie", "it", "lv", "lt", "lu", "mt", "nl", "pl", "pt", "ro", "sk", "si", "es",
               "se")})
    """Named regions and the languages/countries in them (for disclaimers)."""

    @classmethod
    def from_json(cls, value: Any, where: str = "rules") -> RuleSet:
        """Parse a rule set, naming the field of every mistake."""
        if not isinstance(value, Mapping):
            raise ValidationFailed(where, "must be an object of checks")
        known = {"severity", "postal_address", "banned_phrases", "required_phrases",
                 "disclaimers", "spam_words", "max_grade"}
        for key in value:
            if key not in known:
                raise ValidationFailed(f"{where}.{key}", f"unknown setting; use one of "
                                                         f"{', '.join(sorted(known))}")
        severity = dict(DEFAULT_SEVERITY)
        for check, level in dict(value.get("severity") or {}).items():
            if check not in CHECKS:
                raise ValidationFailed(f"{where}.severity.{check}",
                                       f"unknown check; use one of {', '.join(CHECKS)}")
            if level not in SEVERITIES:
                raise ValidationFailed(f"{where}.severity.{check}",
                                       "must be error, warning or off")
            severity[check] = level
        disclaimers = []
        for i, item in enumerate(value.get("disclaimers") or ()):
            spot = f"{where}.disclaimers.{i}"
            if not isinstance(item, Mapping) or not isinstance(item.get("text"), str) \
                    or not item["text"].strip():
                raise ValidationFailed(spot, "needs a text, e.g. {text: '...', regions: [EU]}")
            disclaimers.append(Disclaimer(item["text"], _strings(item.get("regions"),
                                                                  f"{spot}.regions"),
                                          _strings(item.get("purposes"), f"{spot}.purposes")))
        grade = value.get("max_grade", 9.0)
        if isinstance(grade, bool) or not isinstance(grade, int | float) or not 1 <= grade <= 20:
            raise ValidationFailed(f"{where}.max_grade", "must be a number from 1 to 20")
        address = value.get("postal_address", "")
        if not isinstance(address, str):
            raise ValidationFailed(f"{where}.postal_address", "must be text")
        spam = value.get("spam_words")
        return cls(severity=severity, postal_address=address.strip(),
                   banned_phrases=_strings(value.get("banned_phrases"),
                                           f"{where}.banned_phrases"),
                   required_phrases=_strings(value.get("required_phrases"),
                                             f"{where}.required_phrases"),
                   disclaimers=tuple(disclaimers),
                   spam_words=SPAM_WORDS if spam is None else _strings(spam,
                                                                       f"{where}.spam_words"),
                   max_grade=float(grade))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or len(value) > MAX_PHRASES:
        raise ValidationFailed(where, f"must be a list of at most {MAX_PHRASES} strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or len(item) > 500:
            raise ValidationFailed(f"{where}.{i}", "must be non-empty text (at most 500 "
                                                   "characters)")
    return tuple(item.strip() for item in value)


@dataclass(frozen=True)
class Content:
    """What is checked: one template (or inline message) as written."""

    channel: str
    purpose: str = "marketing"
    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""
    locale: str = ""
    name: str = ""


@dataclass(frozen=True)
class Finding:
    """One check's result: `error` blocks publishing, `warning` is shown."""

    check: str
    severity: str
    message: str
    where: str = ""
    """subject, html, text, ... (and the offending excerpt in the message)."""

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"check": self.check, "severity": self.severity, "message": self.message,
                "where": self.where}


LinkChecker = Callable[[str], str | None]
"""Given a URL, a reason it is broken (None when it answers)."""


def check_content(rules: RuleSet, content: Content,
                  link_checker: LinkChecker | None = None) -> list[Finding]:
    """Every finding for `content`, errors first."""
    findings: list[Finding] = []
    tree = _parse(content.html) if content.html.strip() else None
    visible = _visible_text(tree) if tree is not None else ""
    words = " ".join(part for part in (content.subject, content.preheader, visible,
                                       content.text) if part)

    def add(check: str, message: str, where: str = "") -> None:
        level = rules.severity.get(check, DEFAULT_SEVERITY[check])
        if level != "off":
            findings.append(Finding(check, level, message, where))

    marketing_email = content.channel == "email" and content.purpose != "transactional"
    if marketing_email:
        _unsubscribe(content, tree, add)
        if rules.postal_address and _squash(rules.postal_address) not in _squash(words):
            add("postal_address", f"the postal address {rules.postal_address!r} is missing "
                                  "(required in marketing email by CAN-SPAM)", "html")
    for phrase in rules.banned_phrases:
        if _contains(words, phrase):
            add("banned_phrases", f"the banned phrase {phrase!r} appears", _where(content,
                                                                                   phrase))
    for phrase in rules.required_phrases:
        if not _contains(words, phrase):
            add("required_phrases", f"the required phrase {phrase!r} is missing")
    for disclaimer in rules.disclaimers:
        if _applies(rules, disclaimer, content) and _squash(disclaimer.text) not in \
                _squash(words):
            add("disclaimers", f"the disclaimer {_short(disclaimer.text)!r} is required "
                               f"here and missing")
    if tree is not None:
        _links(tree, add, link_checker)
        for img in tree.iter("img"):
            alt = img.get("alt")  # alt="" is right for decorative images
            if alt is None or (alt and not alt.strip()):
                add("image_alt", f"image {_short(img.get('src') or '?')!r} has no alt text "
                                 "(screen readers and image-blocking clients show nothing)",
                    "html")
    found_spam = sorted({w for w in rules.spam_words if _contains(words, w)})
    if found_spam:
        add("spam_words", f"spam-trigger words: {', '.join(found_spam[:10])}",
            _where(content, found_spam[0]))
    prose = visible or content.text
    if len(prose.split()) >= 30:
        grade = reading_grade(prose)
        if grade > rules.max_grade:
            add("reading_level", f"reading level is grade {grade:.1f}, above the "
                                 f"{rules.max_grade:g} this workspace aims for; shorten "
                                 "sentences and words")
    return sorted(findings, key=lambda f: (f.severity != "error", f.check))


def _unsubscribe(content: Content, tree: Any, add: Callable[..., None]) -> None:
    pattern = re.compile(r"\{\{-?\s*unsubscribe_url\b")
    in_html = tree is not None and any(
        pattern.search(a.get("href") or "") for a in tree.iter("a"))
    in_text = bool(pattern.search(content.text))
    if content.html.strip() and not in_html:
        add("unsubscribe", "no link to {{ unsubscribe_url }} in the HTML part; marketing "
                           "email must let people unsubscribe in one click", "html")
    elif not content.html.strip() and not in_text:
        add("unsubscribe", "no {{ unsubscribe_url }} in the text; marketing email must let "
                           "people unsubscribe", "text")


def _links(tree: Any, add: Callable[..., None], checker: LinkChecker | None) -> None:
    seen: set[str] = set()
    for anchor in tree.iter("a"):
        href = (anchor.get("href") or "").strip()
        if not href:
            add("links", f"link {_short(_text(anchor))!r} has no address", "html")
            continue
        if href in seen or _TEMPLATE_EXPR.match(href) or href.startswith("#"):
            continue
        seen.add(href)
        if "{{" in href:  # a template expression inside a URL: check its literal part only
            literal = href.split("{{", 1)[0]
            if literal and not literal.lower().startswith(_SAFE_SCHEMES):
                add("links", f"link {_short(href)!r} does not start with http(s)://", "html")
            continue
        if not href.lower().startswith(_SAFE_SCHEMES):
            add("links", f"link {_short(href)!r} is not an http(s), mailto: or tel: address",
                "html")
        elif checker is not None and href.lower().startswith(("http://", "https://")):
            broken = checker(href)
            if broken:
                add("links", f"link {_short(href)!r} is broken: {broken}", "html")


def _parse(html: str) -> Any:
    # Browsers put what follows </body> or </html> into the body; lxml would drop it.
    html = re.sub(r"</\s*(?:html|body)\s*>", "", html, flags=re.I)
    try:
        return lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return lxml.html.fragment_fromstring(html, create_parent="div")


def _visible_text(tree: Any) -> str:
    for dead in tree.xpath("//script|//style|//head"):
        dead.drop_tree()
    return " ".join(tree.text_content().split())


def _text(element: Any) -> str:
    return " ".join(element.text_content().split()) or "(no text)"


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def _contains(text: str, phrase: str) -> bool:
    body = re.escape(_squash(phrase))
    left = r"\b" if phrase[:1].isalnum() else ""
    right = r"\b" if phrase[-1:].isalnum() else ""
    return re.search(f"{left}{body}{right}", _squash(text)) is not None


def _where(content: Content, phrase: str) -> str:
    for name in ("subject", "preheader", "text"):
        if _contains(getattr(content, name), phrase):
            return name
    return "html"


def _short(text: str, size: int = 60) -> str:
    return text if len(text) <= size else text[: size - 3] + "..."


def _applies(rules: RuleSet, disclaimer: Disclaimer, content: Content) -> bool:
    if disclaimer.purposes and content.purpose not in disclaimer.purposes:
        return False
    if not disclaimer.regions:
        return True
    locale = content.locale.lower().replace("_", "-")
    parts = {locale, *locale.split("-")} if locale else set()
    for region in disclaimer.regions:
        members = rules.region_groups.get(region, ())
        if region.lower() in parts or parts & set(members):
            return True
    return False


@lru_cache(maxsize=1)
def _dictionary() -> pyphen.Pyphen:
    return pyphen.Pyphen(lang="en_US")


def syllables(word: str) -> int:
    """Syllables in an English word, from hyphenation points (at least one)."""
    return max(1, len(_dictionary().positions(word)) + 1)


def reading_grade(text: str) -> float:
    """Flesch-Kincaid grade level: 0.39 * words/sentence + 11.8 * syllables/word - 15.59."""
    sentences = max(1, len(re.findall(r"[.!?]+(?:\s|$)", text)))
    words = re.findall(r"[A-Za-z][A-Za-z'\-]*", text)
    if not words:
        return 0.0
    count = sum(syllables(w) for w in words)
    return 0.39 * len(words) / sentences + 11.8 * count / len(words) - 15.59


def blocking(findings: Sequence[Finding]) -> list[Finding]:
    """The findings that block publishing."""
    return [f for f in findings if f.severity == "error"]
