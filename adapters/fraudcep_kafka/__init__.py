"""fraudcep's Kafka runtime: the exactly-once runner, its checkpoint stores and producers."""
