"""The bounds of a rule file (documented in ``docs/rules.md``), and the budget the rules of one
file draw on, so that no input takes time or memory beyond them."""

from __future__ import annotations

import attrs

MAX_TEXT_SIZE = 262_144
"""The largest rule file (bytes of a file, characters of a text): 256 KiB."""
MAX_DEPTH = 32
"""The deepest nesting of lists and mappings in a rule file."""
MAX_RULES = 1_000
"""The most rules one file holds."""
MAX_NAME_LENGTH = 200
"""The longest rule id and stage name, in characters."""
MAX_VERSION = 2**63 - 1
"""The largest rule ``version`` (a signed 64-bit integer, as in Kafka headers and Java)."""
MAX_DURATION_MS = 3_650 * 86_400_000
"""The longest duration (``within``, ``window``): 3650 days."""
MAX_INT_CHARS = 32
"""The longest text of an integer in a rule file; longer ones are refused unread."""
MAX_NODES = 100_000
"""The most values in one rule file (mapping keys, lists and mappings included)."""
MAX_FILE_STAGES = 1_000
"""The most stages in all the rules of one file (groups and their stages count)."""
MAX_FILE_CONDITIONS = 1_000
"""The most expressions (``where``, ``or_where``, ``until``) in all the rules of one file."""
MAX_FILE_CONDITION_TEXT = 100_000
"""The most characters of expression text in all the rules of one file (compiling takes time
in proportion to it)."""
MAX_PROBLEMS = 1_000
"""Reading stops after this many problems."""


@attrs.define
class Budget:
    """What the rules of one file have used of the file's limits."""

    stages: int = 0
    conditions: int = 0
    condition_text: int = 0
