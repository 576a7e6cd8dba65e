"""Shared pytest fixtures: the real services tests talk to; and hypothesis settings."""

from hypothesis import settings
from support.aws_server import aws_endpoint
from support.kafka_broker import kafka_bootstrap
from support.webhook_server import webhook

__all__ = ["aws_endpoint", "kafka_bootstrap", "webhook"]

# No per-example deadline: tests must pass on a busy machine, and how long one example takes
# there says nothing about the behaviour under test (speed is measured in benchmarks/).
settings.register_profile("fraudcep", deadline=None)
settings.load_profile("fraudcep")
