"""Channels: templates, providers (log, webhook, email, task), the interceptor chain around
delivery, and the outbox's operator side (list, inspect, replay)."""

from cadenza.channels.base import Channel, ChannelDeps, ChannelSpec
from cadenza.channels.errors import ChannelError, RenderFailed, Undeliverable
from cadenza.channels.interceptors import (
    Interceptor,
    Outcomes,
    Proceed,
    ShadowInterceptor,
    SuppressionInterceptor,
    build_chain,
    default_interceptors,
)
from cadenza.channels.models import (
    Message,
    Outcome,
    OutcomeKind,
    Recipient,
    SendResult,
    TemplateRecord,
)
from cadenza.channels.options import SmtpOptions, WebhookOptions
from cadenza.channels.outbox import STATUSES, OutboxService, ReplayReport
from cadenza.channels.registry import ChannelRegistry, channel_names, channel_spec, check_params
from cadenza.channels.render import Renderer, render_context
from cadenza.channels.stop import (
    StopState,
    resume_sends,
    sends_stopped,
    stop_sends,
    stopped_clause,
)
from cadenza.channels.templates import TemplateService, load_templates

__all__ = [
    "STATUSES",
    "Channel",
    "ChannelDeps",
    "ChannelError",
    "ChannelRegistry",
    "ChannelSpec",
    "Interceptor",
    "Message",
    "OutboxService",
    "Outcome",
    "OutcomeKind",
    "Outcomes",
    "Proceed",
    "Recipient",
    "RenderFailed",
    "Renderer",
    "ReplayReport",
    "SendResult",
    "ShadowInterceptor",
    "SmtpOptions",
    "StopState",
    "SuppressionInterceptor",
    "TemplateRecord",
    "TemplateService",
    "Undeliverable",
    "WebhookOptions",
    "build_chain",
    "channel_names",
    "channel_spec",
    "check_params",
    "default_interceptors",
    "load_templates",
    "render_context",
    "resume_sends",
    "sends_stopped",
    "stop_sends",
    "stopped_clause",
]
