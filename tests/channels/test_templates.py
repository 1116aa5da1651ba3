"""Templates: saved with checks, rendered in the sandbox over the allow-listed context."""

from __future__ import annotations

import pytest

from cadenza.channels import Recipient, Renderer, RenderFailed, TemplateService, render_context
from cadenza.clock import FakeClock
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Store
from tests.channels.support import add_contact

ADA = Recipient(1, email="ada@example.com", attributes={"first_name": "Ada", "plan": "pro"},
                timezone="Europe/London", locale="en-GB")


def render(source: str, *, html: bool = False, entry: dict[str, object] | None = None) -> str:
    context = render_context(ADA, entry or {"order_id": "o-1"}, "onboarding", "welcome")
    return Renderer().render(source, context, name="t", html=html)


def test_renders_contact_entry_journey_and_step() -> None:
    text = render("Hi {{ contact.attributes.first_name }} ({{ contact.email }}), "
                  "order {{ entry.order_id }} in {{ journey }}/{{ step }}, "
                  "{{ contact.timezone }} {{ contact.locale }}")
    assert text == ("Hi Ada (ada@example.com), order o-1 in onboarding/welcome, "
                    "Europe/London en-GB")


def test_undefined_variable_is_an_error_naming_it() -> None:
    with pytest.raises(RenderFailed) as caught:
        render("Hi {{ contact.attributes.nickname }}")
    assert "nickname" in caught.value.message
    assert caught.value.template == "t"
    with pytest.raises(RenderFailed, match="'discount' is undefined"):
        render("{{ discount }}")
    assert render("{{ contact.attributes.nickname | default('friend') }}") == "friend"


@pytest.mark.parametrize("source", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ contact.__class__ }}",
    "{{ contact.attributes.update({'x': 1}) }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
])
def test_the_sandbox_refuses_python_internals(source: str) -> None:
    with pytest.raises(RenderFailed):
        render(source)


@pytest.mark.parametrize("name", ["settings", "config", "environ", "os", "request"])
def test_no_settings_or_environment_in_reach(name: str) -> None:
    with pytest.raises(RenderFailed, match="undefined"):
        render("{{ " + name + " }}")


def test_only_allow_listed_names_reach_the_template() -> None:
    context = {**render_context(ADA, {}, None, None), "secret_key": "s3cret"}
    with pytest.raises(RenderFailed, match="undefined"):
        Renderer().render("{{ secret_key }}", context, name="t")


def test_html_bodies_are_escaped_and_text_is_not() -> None:
    entry = {"note": "<script>alert(1)</script>"}
    assert render("<p>{{ entry.note }}</p>", html=True, entry=entry) == (
        "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>")
    assert render("{{ entry.note }}", entry=entry) == "<script>alert(1)</script>"


def test_output_is_capped() -> None:
    renderer = Renderer(max_output_chars=1000)
    context = render_context(ADA, {}, None, None)
    with pytest.raises(RenderFailed, match="over 1000 characters"):
        renderer.render("{% for i in range(5000) %}xx{% endfor %}", context, name="big")


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(RenderFailed, match="line 2"):
        render("ok\n{{ contact.email ")


def test_save_get_list_update(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    record, created = service.save("welcome", "email", "Hi {{ contact.attributes.first_name }}",
                                   "<p>Welcome!</p>")
    assert created
    assert record.created_at == clock.now_ms()
    clock.advance(1000)
    record, created = service.save("welcome", "email", "Hello", "<p>Welcome back</p>")
    assert not created
    assert record.updated_at == clock.now_ms()
    assert record.created_at == clock.now_ms() - 1000
    assert service.get("welcome").subject == "Hello"
    assert [t.key for t in service.all()] == ["welcome"]
    assert service.missing(["welcome", "gone"]) == ["gone"]
    with pytest.raises(NotFound):
        service.get("gone")


@pytest.mark.parametrize(("key", "channel", "subject", "body", "field"), [
    ("Bad Key", "email", "", "x", "key"),
    ("ok", "emali", "", "x", "channel"),
    ("ok", "email", "", "  ", "body"),
    ("ok", "email", "{{ broken", "x", "template"),
    ("ok", "email", "", "{% for %}", "template"),
])
def test_save_rejects_bad_templates(store: Store, clock: FakeClock, key: str, channel: str,
                                    subject: str, body: str, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        TemplateService(store, clock).save(key, channel, subject, body)
    assert caught.value.field == field
    if channel == "emali":
        assert "did you mean 'email'" in caught.value.message


def test_preview_renders_for_a_contact(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    service.save("cart", "email", "Your {{ entry.item }}", "Hi {{ contact.attributes.name }}")
    contact = add_contact(store, clock.now_ms(), email="bo@example.com",
                          attributes={"name": "Bo"})
    assert service.preview("cart", contact, {"item": "lamp"}) == {
        "subject": "Your lamp", "body": "Hi Bo", "html": False}
    with pytest.raises(NotFound):
        service.preview("cart", contact + 100)
