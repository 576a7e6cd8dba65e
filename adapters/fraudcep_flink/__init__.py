"""The PyFlink adapter: fraudcep rules inside an Apache Flink job (groundwork; see docs/flink.md).

Its modules import ``pyflink``, which lives in a virtualenv of its own
(``scripts/flink-setup.sh`` makes ``.venv-flink``); the core package never imports Flink.
:mod:`fraudcep_flink.environment` starts a local environment in thread mode,
:mod:`fraudcep_flink.spike` embeds the engine in a keyed broadcast function and
:mod:`fraudcep_flink.bench` measures what PyFlink itself costs per event.
"""
