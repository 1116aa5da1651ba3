"""The demo workspace: a believable SaaS business generated from a seed (`generate_demo`)."""

from cadenza.demo.generate import DemoSummary, generate_demo

__all__ = ["DemoSummary", "generate_demo"]
