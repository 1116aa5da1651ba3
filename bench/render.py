"""Rendering personalised HTML email: emails per second through `Renderer.compose`.

    uv run python bench/render.py [--contacts 20000] [--rounds 3] [--profile]

Saves (untimed) an MJML template with a loop over the entry's products, a few contact
attributes, a subject, a preheader, a generated text part and a snippet include, as
`TemplateService.save` stores it (MJML compiled, CSS inlined), and loads it back as the
dispatcher does. Then renders it for `--contacts` distinct contacts, each with its own
attributes and entry, through the same path as the dispatcher's render stage:
`render_context` + `Renderer.compose` (subject, preheader, HTML body, text part). Prints the
best round's emails per second (bar: at least 10,000 on the 2-core reference machine) and
the sizes of one rendered email.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from cadenza.channels.models import Recipient
from cadenza.channels.render import render_context
from cadenza.channels.templates import TemplateService, load_templates
from cadenza.clock import FakeClock
from cadenza.store import Store, upgrade

TEMPLATE = """<mjml>
  <mj-head>
    <mj-style>.price { color: #0a7d32; font-weight: bold; } h1 { font-size: 22px; }</mj-style>
  </mj-head>
  <mj-body background-color="#f4f4f4">
    <mj-section background-color="#ffffff">
      <mj-column>
        <mj-text><h1>Hi {{ contact.attributes.first_name | default("there") }},</h1></mj-text>
        <mj-text>You left {{ entry.products | length }} items in your cart on your
          {{ contact.attributes.plan | title }} plan:</mj-text>
        {% for item in entry.products %}
        <mj-text>{{ loop.index }}. {{ item.name }} x{{ item.quantity }}
          <span class="price">{{ "%.2f" | format(item.price) }} {{ entry.currency }}</span>
        </mj-text>
        {% endfor %}
        <mj-button href="https://shop.example/cart/{{ entry.cart_id }}?c={{ contact.user_id }}">
          Back to your cart</mj-button>
        <mj-text>{% include "footer" %}</mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""
FOOTER = ('<p style="font-size:11px">Quillstack, 1 Example Street. '
          '<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')
NAMES = ["Ada", "Bo", "Chen", "Dana", "Émile", "Farah", "Gus", "Hana", "Ivo", "Jun"]
PRODUCTS = ["Notebook", "Pen", "Lamp", "Desk mat", "Mug", "Stand"]


def contacts_and_entries(count: int) -> list[tuple[Recipient, dict[str, Any]]]:
    """`count` distinct contacts, each with an entry of 1-4 products."""
    out = []
    for n in range(count):
        contact = Recipient(n + 1, email=f"user{n}@example.com", user_id=f"u{n}",
                            attributes={"first_name": NAMES[n % len(NAMES)],
                                        "plan": ("free", "pro", "team")[n % 3],
                                        "score": n % 100},
                            timezone="Europe/Paris", locale="en")
        products = [{"name": PRODUCTS[(n + i) % len(PRODUCTS)], "quantity": 1 + i,
                     "price": 3.5 + (n % 17) + i} for i in range(1 + n % 4)]
        out.append((contact, {"cart_id": f"c{n}", "currency": "EUR", "products": products}))
    return out


def main() -> None:
    """Build, render, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top of a profile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        store = Store.create(url)
        clock = FakeClock()
        service = TemplateService(store, clock)
        service.snippets.save("footer", FOOTER)
        service.save("cart", "email", "{{ contact.attributes.first_name }}, your cart is "
                     "waiting", TEMPLATE, preheader="{{ entry.products | length }} items "
                     "saved for you", format="mjml")
        with store.read() as conn:
            template = load_templates(conn, ["cart"])["cart"]
        people = contacts_and_entries(args.contacts)
        renderer = service.renderer
        links = {"unsubscribe": "https://cadenza.example/u/token"}

        def run() -> float:
            start = time.perf_counter()
            for contact, entry in people:
                context = render_context(contact, entry, "cart-recovery", "reminder", links)
                renderer.compose(template=template, params={}, text_fields=("subject", "body"),
                                 context=context, inline_name="cart-recovery.reminder")
            return time.perf_counter() - start

        run()  # warm the compile cache and the snippet cache
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            run()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        best = min(run() for _ in range(args.rounds))
        sample = renderer.compose(template=template, params={}, text_fields=(),
                                  context=render_context(people[0][0], people[0][1], "j",
                                                         "s", links), inline_name="x")
        store.dispose()
    print(f"rendered {args.contacts:,} personalised HTML emails in {best:.3f} s: "
          f"{args.contacts / best:,.0f} emails/s (bar: 10,000)")
    print(f"one email: subject {len(sample['subject'])} chars, preheader "
          f"{len(sample['preheader'])}, HTML {len(sample['body']):,}, text "
          f"{len(sample['text']):,}")


if __name__ == "__main__":
    main()
