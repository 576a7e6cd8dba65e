"""The pattern language: stages, quantifiers, contiguity, windows (:mod:`.pattern`), the
conditions stages test (:mod:`.conditions`) and what happens after a match (:mod:`.skip`),
with Flink CEP's ``Pattern`` API and meaning."""

from __future__ import annotations

from fraudcep.pattern.pattern import Pattern, WithinType
from fraudcep.pattern.skip import SkipStrategy

__all__ = ["Pattern", "SkipStrategy", "WithinType"]
