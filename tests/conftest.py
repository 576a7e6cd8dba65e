"""Shared pytest fixtures."""

from kafka_broker import kafka_bootstrap

__all__ = ["kafka_bootstrap"]
