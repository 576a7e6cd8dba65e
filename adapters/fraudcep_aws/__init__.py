"""AWS adapters around the fraudcep core: DynamoDB and S3 (Parquet) alert sinks, an S3
checkpoint store, and Lambda handlers (a detector for Kafka event sources, a notifier for
DynamoDB Streams). Every client is made by :func:`fraudcep_aws.clients.client`, which
honours ``AWS_ENDPOINT_URL`` so the same code runs against AWS, LocalStack or moto.
See ``docs/aws.md``."""
