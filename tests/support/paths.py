"""Where things are: the repository, the tests folder and its data."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
DATA = TESTS / "data"
DIFFERENTIAL = TESTS / "differential"
HOSTILE_RULES = TESTS / "hostile_rules"
SNAPSHOTS_V1 = DATA / "snapshots-v1"
"""Snapshots of format 1 written by an earlier release, and what they must restore to."""
