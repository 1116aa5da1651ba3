"""The demo workspace: a believable SaaS business generated from a seed (`generate_demo`),
its journeys (`setup_journeys`), and the events that keep arriving while it is served
(`streaming`)."""

from cadenza.demo.generate import DemoSummary, generate_demo, is_demo_workspace
from cadenza.demo.journeys import DemoJourney, enrollment_counts, setup_journeys
from cadenza.demo.stream import DemoStream, StreamOptions, StreamReport, streaming

__all__ = ["DemoJourney", "DemoStream", "DemoSummary", "StreamOptions", "StreamReport",
           "enrollment_counts", "generate_demo", "is_demo_workspace", "setup_journeys",
           "streaming"]
