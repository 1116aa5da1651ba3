"""Cadenza: self-hosted marketing automation and customer-journey orchestration."""

__version__ = "0.1.0"
