"""The ``fraudcep`` command line: wires the core and its adapters together."""
