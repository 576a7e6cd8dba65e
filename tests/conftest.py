"""Shared pytest fixtures: the real services tests talk to."""

from aws_server import aws_endpoint
from kafka_broker import kafka_bootstrap
from webhook_server import webhook

__all__ = ["aws_endpoint", "kafka_bootstrap", "webhook"]
