"""The automaton a pattern compiles to (:mod:`.compiler`) and the matcher that runs it over one
key's events (:mod:`.matcher`), in Flink CEP's order (:mod:`.javaheap`)."""
