"""Templates: saved with checks, rendered in the sandbox over the allow-listed context."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa

from cadenza.channels import Recipient, Renderer, RenderFailed, TemplateService, render_context
from cadenza.clock import FakeClock
from cadenza.engine.retry import RetryPolicy
from cadenza.errors import NotFound, ValidationFailed
from cadenza.settings import Settings
from cadenza.store import Store, schema
from tests.channels.servers import SmtpSink
from tests.channels.support import add_contact, add_outbox, make_dispatcher, outbox_rows, smtp

__all__ = ["smtp"]

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
        "subject": "Your lamp", "body": "Hi Bo", "html": False, "locale": None}
    with pytest.raises(NotFound):
        service.preview("cart", contact + 100)


def compose_for(service: TemplateService, key: str,
                attributes: dict[str, object] | None = None) -> dict[str, object]:
    contact = Recipient(1, email="a@example.com", phone="+15550100",
                        attributes=attributes or {"name": "Ann & <Co>"})
    return service.renderer.compose(template=service.get(key), params={}, text_fields=(),
                                    context=render_context(contact, {"n": 3}, None, None),
                                    inline_name=key)


def test_sms_templates_are_plain_text_even_when_they_look_like_html(
        store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    record, _ = service.save("code", "sms", "", "<b>{{ contact.attributes.name }}</b>: "
                             "{{ entry.n }} left")
    assert record.compiled is None
    assert compose_for(service, "code") == {"body": "<b>Ann & <Co></b>: 3 left", "html": False}
    with pytest.raises(ValidationFailed) as caught:
        service.save("code", "sms", "", "Hi", preheader="x")
    assert caught.value.field == "preheader"


def test_webhook_bodies_must_render_to_json(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    service.save("hook", "webhook", "", '{"name": {{ contact.attributes.name | tojson }}, '
                 '"n": {{ entry.n }}, "tags": {{ contact.attributes.tags | default([]) | '
                 "tojson }}}")
    content = compose_for(service, "hook", {"name": 'Ann "the" <Co>\n', "tags": ["a"]})
    assert content["json"] == {"name": 'Ann "the" <Co>\n', "n": 3, "tags": ["a"]}
    service.save("naive", "webhook", "", '{"name": "{{ contact.attributes.name }}"}')
    with pytest.raises(RenderFailed, match=r"not JSON after rendering.*tojson"):
        compose_for(service, "naive", {"name": 'Ann "the" Co'})


def test_purpose_is_marketing_transactional_or_a_topic(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    assert service.save("a", "email", "S", "x")[0].purpose == "marketing"
    assert service.save("a", "email", "S", "x", purpose="transactional")[0].purpose == \
        "transactional"
    with pytest.raises(ValidationFailed, match="create the topic first") as caught:
        service.save("a", "email", "S", "x", purpose="product-news")
    assert caught.value.field == "purpose"
    with store.begin() as conn:
        conn.execute(sa.insert(schema.topics).values(key="product-news", name="Product news",
                                                     description="", channel="email",
                                                     created_at=clock.now_ms()))
    assert service.get("a").purpose == "transactional"
    assert service.save("a", "email", "S", "x", purpose="product-news")[0].purpose == \
        "product-news"


def test_new_fields_round_trip(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    service.save("full", "email", "S", "<p>x</p>", preheader="P", text="T",
                 locales={"fr": {"body": "<p>y</p>"}})
    shown = service.get("full").to_dict()
    assert (shown["preheader"], shown["text"], shown["format"]) == ("P", "T", "jinja")
    assert shown["locales"]["fr"]["body"] == "<p>y</p>"
    service.delete("full")
    with pytest.raises(NotFound):
        service.delete("full")


def test_a_template_failing_for_one_contact_dead_letters_that_row_only(
        store: Store, clock: FakeClock, smtp: SmtpSink) -> None:
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp.port,
                                 policy=RetryPolicy(max_attempts=1, initial_ms=1000))
    dispatcher.templates.save("strict", "email", "Hi {{ contact.attributes.first_name }}",
                              "<p>Plan {{ contact.attributes.plan }}</p>")
    good = [add_contact(store, clock.now_ms(), email=f"ok{n}@example.com",
                        attributes={"first_name": f"N{n}", "plan": "pro"}) for n in range(5)]
    bad = add_contact(store, clock.now_ms(), email="bad@example.com",
                      attributes={"first_name": "Bo"})
    ids = add_outbox(store, clock.now_ms(), [{"contact_id": c, "channel": "email",
                                              "template": "strict"} for c in [*good, bad]])

    async def run() -> None:
        try:
            await dispatcher.run_once(100)
        finally:
            await dispatcher.close()

    asyncio.run(run())
    rows = outbox_rows(store)
    assert [rows[i]["status"] for i in ids] == ["sent"] * 5 + ["dead"]
    error = rows[ids[-1]]["last_error"]
    assert "template 'strict'" in error
    assert "'plan'" in error
    assert sorted(m.rcpt for m in smtp.mails) == sorted(f"ok{n}@example.com" for n in range(5))


def test_the_render_time_limit_comes_from_the_settings(store: Store, clock: FakeClock) -> None:
    settings = Settings.load(database_url="sqlite://", secret_key="s" * 40,
                             template_render_timeout_ms=50)
    service = TemplateService.from_settings(store, clock, settings)
    assert service.renderer.timeout_ms == 50
    with pytest.raises(RenderFailed, match="longer than 50 ms"):
        service.renderer.render("{% for a in range(99999) %}{% for b in range(99999) %}"
                                "{% endfor %}{% endfor %}", {}, name="slow")


def test_only_range_and_dict_are_global() -> None:
    renderer = Renderer()
    assert sorted(renderer.environment(True).globals) == ["dict", "range"]
    assert renderer.render("{{ range(3)|list }} {{ dict(a=1) }}", {}, name="g") == \
        "[0, 1, 2] {'a': 1}"


def test_the_limits_hold_in_every_thread() -> None:
    renderer = Renderer(max_output_chars=1000, timeout_ms=100)
    failures: list[str] = []

    def work() -> None:
        for source in ("{{ 'x' * 5000 }}", "{% for a in range(99999) %}{% for b in "
                       "range(99999) %}{% endfor %}{% endfor %}"):
            try:
                renderer.render(source, {}, name="t")
            except RenderFailed as exc:
                failures.append(exc.message)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(f.split(":")[1].strip()[:12] for f in failures) == [
        "repeating a ", "repeating a ", "took longer ", "took longer "]
