"""Email layout at save time: MJML, CSS inlining, the preheader and the text part keep every
Jinja tag (also in attributes and between table rows), and what is stored renders per
contact."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.channels import Recipient, TemplateService, render_context
from cadenza.channels.layout import (
    html_to_text,
    inline_css,
    lay_out,
    protect,
    split_compiled,
)
from cadenza.clock import FakeClock
from cadenza.errors import ValidationFailed
from cadenza.store import Store
from tests.channels.servers import http_receiver

MJML = """<mjml>
  <mj-head><mj-style>.price { color: #0a7d32; } a { color: #224488; }</mj-style></mj-head>
  <mj-body>
    <mj-section><mj-column>
      <mj-text>Hi {{ contact.attributes.name | default("there") }},</mj-text>
      {% for item in entry['items'] %}
      <mj-text><span class="price">{{ item.name }}</span></mj-text>
      {% endfor %}
      <mj-button href="https://shop.example/cart/{{ entry.cart }}?u={{ contact.user_id }}">
        Back to your cart</mj-button>
      <mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
    </mj-column></mj-section>
  </mj-body>
</mjml>"""
ADA = Recipient(7, email="ada@example.com", user_id="u-7",
                attributes={"name": "Ada <Lovelace>"}, locale="en")
ENTRY = {"cart": "c-9", "items": [{"name": "Lamp"}, {"name": "Pen & ink"}]}
LINKS = {"unsubscribe": "https://cadenza.example/u/tok?x=1&y=2"}


def compose(service: TemplateService, key: str, contact: Recipient = ADA,
            entry: dict[str, object] | None = None) -> dict[str, object]:
    context = render_context(contact, ENTRY if entry is None else entry, "j", "s", LINKS)
    return service.renderer.compose(template=service.get(key), params={}, text_fields=(),
                                    context=context, inline_name=key)


def test_mjml_is_compiled_at_save_and_its_tags_survive(store: Store,
                                                       clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    record, _ = service.save("cart", "email", "Your cart, {{ contact.attributes.name }}", MJML,
                             preheader="{{ entry['items'] | length }} items & more",
                             format="mjml")
    assert record.compiled is not None
    html, text = split_compiled(record.compiled)
    assert "<mj-" not in html
    assert "<table" in html
    assert 'href="https://shop.example/cart/{{ entry.cart }}?u={{ contact.user_id }}"' in html
    assert 'href="{{ unsubscribe_url }}"' in html
    assert "{% for item in entry['items'] %}" in html
    assert "{% endfor %}" in html
    assert "style=" in html
    assert "#0a7d32" in html.split("</head>")[1]
    assert "@media" in html  # responsive rules stay in a <style>
    assert text is not None
    assert "{{ item.name }}" in text

    content = compose(service, "cart")
    body = str(content["body"])
    assert content["html"] is True
    assert content["subject"] == "Your cart, Ada <Lovelace>"  # a header: not HTML-escaped
    assert "Hi Ada &lt;Lovelace&gt;," in body
    assert body.count('class="price"') == 2
    assert "Pen &amp; ink" in body
    assert 'href="https://shop.example/cart/c-9?u=u-7"' in body
    assert 'href="https://cadenza.example/u/tok?x=1&amp;y=2"' in body
    assert content["preheader"] == "2 items & more"


def test_the_preheader_is_a_hidden_div_at_the_start_of_the_body(store: Store,
                                                               clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    service.save("p", "email", "S", "<html><body><p>Hello</p></body></html>",
                 preheader="Hi {{ contact.attributes.name }} & co")
    body = str(compose(service, "p")["body"])
    after_body = body.split("<body>", 1)[1]
    assert re.match(r'<div style="display:none;[^"]*">Hi Ada &lt;Lovelace&gt; &amp; co</div>'
                    r"<p>Hello</p>", after_body)


def test_the_text_part_is_generated_with_link_urls_and_one_line_per_item(
        store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    service.save("cart", "email", "S", MJML, format="mjml")
    text = str(compose(service, "cart")["text"])
    assert "Hi Ada <Lovelace>," in text  # text is not escaped
    assert "https://shop.example/cart/c-9?u=u-7" in text
    assert "https://cadenza.example/u/tok?x=1&y=2" in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Lamp" in lines
    assert "Pen & ink" in lines
    assert "<" not in text.replace("<Lovelace>", "")


def test_a_written_text_part_wins(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    record, _ = service.save("t", "email", "S", "<p>HTML {{ contact.email }}</p>",
                             text="Plain {{ contact.email }}")
    assert record.compiled is not None
    assert split_compiled(record.compiled)[1] is None
    content = compose(service, "t")
    assert content["text"] == "Plain ada@example.com"
    assert content["body"] == "<p>HTML ada@example.com</p>"


def test_plain_html_with_style_is_inlined_and_loops_over_rows_stay_in_the_table() -> None:
    source = ("<style>td.c { color: red; }</style><table>{% for r in rows %}"
              '<tr><td class="c">{{ r }}</td></tr>{% endfor %}</table>')
    inlined = inline_css(source)
    assert 'style="color: red;"' in inlined
    start, end = inlined.index("<table>"), inlined.index("</table>")
    assert "{% for r in rows %}" in inlined[start:end]
    assert "{% endfor %}" in inlined[start:end]


def test_plain_text_bodies_have_no_layout(store: Store, clock: FakeClock) -> None:
    assert lay_out("Hi {{ x }}", format="jinja", preheader="", text=None,
                   is_html=False) is None
    service = TemplateService(store, clock)
    record, _ = service.save("plain", "email", "S", "Hi {{ contact.email }}")
    assert record.compiled is None
    assert compose(service, "plain") == {"subject": "S", "body": "Hi ada@example.com",
                                         "html": False}


@pytest.mark.parametrize(("body", "reason"), [
    ("<mjml><mj-body><mj-section></mj-body></mjml>", "not valid MJML"),
    ('<mjml><mj-body><mj-include path="/etc/passwd" /></mj-body></mjml>', "not valid MJML"),
    ("<mjml><mj-body>cadenzajinja1x</mj-body></mjml>", "reserved word"),
])
def test_bad_mjml_is_refused_naming_the_body(store: Store, clock: FakeClock, body: str,
                                            reason: str) -> None:
    with pytest.raises(ValidationFailed, match=reason) as caught:
        TemplateService(store, clock).save("bad", "email", "S", body, format="mjml")
    assert caught.value.field == "body"


def test_mjml_is_for_email_only(store: Store, clock: FakeClock) -> None:
    with pytest.raises(ValidationFailed) as caught:
        TemplateService(store, clock).save("s", "webhook", "", "<mjml></mjml>", format="mjml")
    assert caught.value.field == "format"


def test_remote_stylesheets_are_never_fetched() -> None:
    with http_receiver() as receiver:
        source = (f'<html><head><link rel="stylesheet" href="{receiver.url}/evil.css">'
                  "<style>p { color: red; }</style></head><body><p>x</p></body></html>")
        inline_css(source)
        assert receiver.requests == []


def test_html_to_text_keeps_tags_in_place() -> None:
    text = html_to_text('<p>Hello {{ name }}</p><p><a href="{{ url }}">Go</a></p>')
    assert "Hello {{ name }}" in text
    assert "[Go]({{ url }})" in text


_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_tags = st.one_of(
    _names.map(lambda n: "{{ " + n + " }}"),
    _names.map(lambda n: "{{ " + n + ' | default("}}") }}'),
    _names.map(lambda n: "{% if " + n + " %}"),
    st.just("{% endif %}"),
    _names.map(lambda n: "{# " + n + " #}"),
)
_html = st.sampled_from(["<p>", "</p>", "<a href=\"", "\">", "text ", "<td>", "<table>",
                         "<title>", "</title>", "<br/>", " & ", "'", '"'])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_tags, _html), max_size=30))
def test_protect_then_restore_is_the_identity(parts: list[str]) -> None:
    source = "".join(parts)
    for comments in (True, False):
        protected = protect(source, comments=comments)
        assert "{{" not in protected.text
        assert "{%" not in protected.text
        assert len(protected.tags) == sum(part.startswith("{") for part in parts)
        assert protected.restore(protected.text, "body") == source
