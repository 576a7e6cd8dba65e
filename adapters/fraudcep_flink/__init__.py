"""The PyFlink adapter: fraudcep rules as an Apache Flink job (see docs/flink.md).

Its modules import ``pyflink``, which lives in a virtualenv of its own
(``scripts/flink-setup.sh`` makes ``.venv-flink``); the core package never imports Flink.
:mod:`fraudcep_flink.job` is the job (``python -m fraudcep_flink run``, what
``fraudcep flink run`` starts), :mod:`fraudcep_flink.keyed` the engine per Flink key and the
rule versions (plain Python, tested without Flink), :mod:`fraudcep_flink.kafka_io` whole
Kafka records in and out, :mod:`fraudcep_flink.config` the job's options,
:mod:`fraudcep_flink.environment` the execution environment (thread mode set up from the
running interpreter), and :mod:`fraudcep_flink.bench` what the job and PyFlink itself cost.
"""
