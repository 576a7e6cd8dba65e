"""Test support: the real services tests talk to (Kafka, moto, a webhook receiver), runner
harnesses, Flink's timer policy, event builders and the paths of test data."""
