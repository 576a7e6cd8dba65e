"""Running a compiled NFA for one key: Flink's ``NFA.process`` / ``NFA.advanceTime``.

A *run* (Flink's ``ComputationState``) is a position in the automaton plus the partial match
that led there. Partial matches are persistent linked lists of :class:`Node` (stage name,
event): a run that branches shares its whole past with its sibling, and a node lives exactly
as long as some run still points at it — the role Flink's ``SharedBuffer`` plays with explicit
reference counts and Dewey-numbered edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fraudcep.nfa import javaheap
from fraudcep.nfa.compiler import Action, CompiledNFA, State, StateKind
from fraudcep.pattern.conditions import compile_single_argument
from fraudcep.pattern.skip import SkipKind, SkipStrategy

#: Order of a run that has not started (Flink sorts those last).
NOT_STARTED = 2**63

_START = StateKind.START
_NORMAL = StateKind.NORMAL
_FINAL = StateKind.FINAL
_STOP = StateKind.STOP
_PENDING = StateKind.PENDING
_PROCEED = Action.PROCEED
_IGNORE = Action.IGNORE


class Node:
    """One matched event in a partial match; ``prev`` points at the event matched before it."""

    __slots__ = ("event", "name", "prev", "seq", "ts")

    def __init__(self, name: str, event: Any, ts: int, seq: int, prev: Node | None) -> None:
        self.name = name
        self.event = event
        self.ts = ts
        self.seq = seq
        self.prev = prev


class Run:
    """A partial match in progress (Flink's ``ComputationState``)."""

    __slots__ = ("node", "order", "prev_ts", "start_ts", "state")

    def __init__(self, state: State, node: Node | None, start_ts: int, prev_ts: int, order: int):
        self.state = state
        self.node = node
        self.start_ts = start_ts
        self.prev_ts = prev_ts
        self.order = order  # sequence number of the start event; NOT_STARTED for a start run

    def __repr__(self) -> str:
        return f"<Run {self.state.name} start={self.order} path={path_names(self.node)}>"


class KeyState:
    """Everything one key holds for one rule: Flink's ``NFAState`` plus the key's clock."""

    __slots__ = ("completed", "deadline", "partial", "time")

    def __init__(self, start: Run) -> None:
        self.partial: list[Run] = [start]
        self.completed: list[Run] = []
        self.time = -(2**63)  # latest timestamp time was advanced to
        self.deadline: int | None = None  # earliest time a window can expire

    @property
    def idle(self) -> bool:
        """Only the start run is left: the key may be forgotten (Flink clears it too)."""
        return len(self.partial) == 1 and not self.completed


def path(node: Node | None) -> list[Node]:
    """The nodes of a partial match, first matched event first."""
    out: list[Node] = []
    while node is not None:
        out.append(node)
        node = node.prev
    out.reverse()
    return out


def path_names(node: Node | None) -> list[str]:
    return [n.name for n in path(node)]


def as_mapping(node: Node | None) -> dict[str, list[Any]]:
    """A partial match in the shape of Flink's ``Map<String, List<T>>``, in pattern order."""
    out: dict[str, list[Any]] = {}
    for n in path(node):
        bucket = out.get(n.name)
        if bucket is None:
            out[n.name] = [n.event]
        else:
            bucket.append(n.event)
    return out


class MatchContext:
    """What iterative conditions see: the events of the run being extended."""

    __slots__ = ("_node", "timestamp")

    def __init__(self, node: Node | None, timestamp: int) -> None:
        self._node = node
        self.timestamp = timestamp

    @property
    def previous(self) -> Any:
        """The event matched last in this partial match (``None`` before the first)."""
        node = self._node
        return None if node is None else node.event

    def events(self, name: str) -> Sequence[Any]:
        """The events matched to stage ``name`` so far, first matched first."""
        found: list[Any] = []
        node = self._node
        while node is not None:
            if node.name == name:
                found.append(node.event)
            node = node.prev
        found.reverse()
        return found


class Matcher:
    """One compiled pattern plus its skip strategy, stepping :class:`KeyState` objects."""

    def __init__(self, nfa: CompiledNFA, skip: SkipStrategy) -> None:
        self.nfa = nfa
        self.skip = skip
        self.start_run = Run(nfa.start, None, -1, -1, NOT_STARTED)
        self.window_ms = nfa.window_ms
        self.uses_context = nfa.uses_context
        self.has_windows = nfa.window_ms > 0 or any(s.window_ms > 0 for s in nfa.states)

    def new_key_state(self) -> KeyState:
        return KeyState(self.start_run)

    # -- the start-state filter ----------------------------------------------------------

    def can_start(self, event: Any, ts: int) -> bool:
        """Would ``event`` take any edge out of the start state? If not, it changes nothing
        for a key that has no partial match."""
        ctx = MatchContext(None, ts)
        stack = [self.nfa.start]
        while stack:
            state = stack.pop()
            for t in state.transitions:
                test = t.test
                if test is None or test(event, ctx):
                    if t.action is Action.TAKE:
                        return True
                    if t.action is Action.PROCEED:
                        stack.append(t.target)
        return False

    def simple_start_test(self) -> Callable[[Any], bool] | None:
        """``can_start`` as a plain one-argument function, when the start state has a single
        take edge, no proceed edge and a condition that needs no context."""
        start = self.nfa.start
        takes = [t for t in start.transitions if t.action is Action.TAKE]
        if not start.no_proceed or len(takes) != 1:
            return None
        condition = takes[0].condition
        if condition is None:
            return lambda event: True
        return compile_single_argument(condition)

    @staticmethod
    def leaves_unchanged(ks: KeyState, event: Any, ts: int) -> bool:
        """True when ``event`` provably changes none of the key's runs (and no completed
        match is waiting): every run sits in a state whose take test rejects it and whose
        other edges would ignore it into the same state."""
        if ks.completed:
            return False
        for run in ks.partial:
            state = run.state
            stays = state.stays
            if stays is not None:
                if stays(event):
                    return False
                continue
            with_context = state.stays_with_context
            if with_context is None or with_context(event, MatchContext(run.node, ts)):
                return False
        return True

    # -- NFA.process ---------------------------------------------------------------------

    def process(self, ks: KeyState, event: Any, ts: int, seq: int) -> list[Run] | None:
        """Feed one event; returns the completed matches emitted now (final runs), or
        ``None`` when the event changed no run at all."""
        if self.leaves_unchanged(ks, event, ts):
            return None
        new_partial: list[Run] = []
        potential: list[Run] = []
        offer = javaheap.offer
        next_runs = self._next_runs
        unchanged = True
        for run in ks.partial:
            new_runs = next_runs(run, event, ts, seq)
            if len(new_runs) == 1:
                new = new_runs[0]
                if new is not run:
                    unchanged = False
                kind = new.state.kind
                if kind is _NORMAL or kind is _START or kind is _PENDING:
                    offer(new_partial, new)
                elif kind is _FINAL:
                    offer(potential, new)
                continue
            unchanged = False
            discard = False
            retained: list[Run] = []
            for new in new_runs:
                kind = new.state.kind
                if kind is _FINAL:
                    offer(potential, new)
                elif kind is _STOP:
                    discard = True
                else:
                    retained.append(new)
            if not discard:
                for new in retained:
                    offer(new_partial, new)
        if unchanged and not ks.completed:
            return None  # every run stayed as it was: keep the heap as it is
        emitted = self._emit(ks, potential, new_partial) if potential or ks.completed else []
        ks.partial = new_partial
        return emitted

    def _next_runs(self, run: Run, event: Any, ts: int, seq: int) -> list[Run]:
        """Flink's ``computeNextStates``: the runs ``run`` turns into on ``event``."""
        state = run.state
        ctx = MatchContext(run.node, ts) if self.uses_context else None
        # the decision graph: follow proceed edges, collect take and ignore edges
        relaxed = state.relaxed
        if relaxed is not None:
            # [take c, ignore not c]: one evaluation decides which edge applies
            edges = [state.transitions[0] if relaxed(event, ctx) else state.transitions[1]]
        elif state.no_proceed:
            edges = [t for t in state.transitions if t.test is None or t.test(event, ctx)]
        else:
            edges = []
            stack = [state]
            while stack:
                current = stack.pop()
                for t in current.transitions:
                    test = t.test
                    if test is None or test(event, ctx):
                        if t.action is _PROCEED:
                            stack.append(t.target)
                        else:
                            edges.append(t)
        is_start = state.kind is _START
        if not edges:
            if is_start:
                return [run if run is self.start_run else Run(state, None, -1, -1, run.order)]
            return []
        out: list[Run] = []
        node: Node | None = None
        for t in edges:
            if t.action is _IGNORE:
                if not is_start:
                    if t.target is state:
                        out.append(run)
                    else:
                        out.append(Run(t.target, run.node, run.start_ts, run.prev_ts, run.order))
                continue
            # TAKE
            if node is None or node.name != t.source.base:
                node = Node(t.source.base, event, ts, seq, run.node)
            if is_start:
                start_ts, order = ts, seq
            else:
                start_ts, order = run.start_ts, run.order
            target = t.target
            out.append(Run(target, node, start_ts, ts, order))
            if not target.no_proceed:
                final = self._final_after_proceed(target, event, ctx)
                if final is not None:
                    out.append(Run(final, node, start_ts, ts, order))
        if is_start:
            out.append(run if run is self.start_run else Run(state, None, -1, -1, run.order))
        return out

    @staticmethod
    def _final_after_proceed(state: State, event: Any, ctx: MatchContext | None) -> State | None:
        stack = [state]
        while stack:
            current = stack.pop()
            for t in current.transitions:
                if t.action is _PROCEED:
                    test = t.test
                    if test is None or test(event, ctx):
                        if t.target.kind is _FINAL:
                            return t.target
                        stack.append(t.target)
        return None

    # -- NFA.advanceTime -----------------------------------------------------------------

    def advance_time(self, ks: KeyState, ts: int) -> tuple[list[Run], list[tuple[Run, int]]]:
        """Expire runs whose window ended by ``ts``.

        Returns the matches this releases (pending ``not_followed_by`` matches, and matches a
        skip strategy was holding back) and the timed-out runs with their timeout timestamps.
        """
        if ts > ks.time:
            ks.time = ts
        if not self.has_windows:
            return [], []
        window = self.window_ms
        new_partial: list[Run] = []
        potential: list[Run] = []
        timeouts: list[tuple[Run, int]] = []
        for run in ks.partial:
            state = run.state
            if state.kind is StateKind.START:
                javaheap.offer(new_partial, run)
                continue
            own = state.window_ms
            by_previous = own > 0 and ts - run.prev_ts >= own
            by_first = window > 0 and ts - run.start_ts >= window
            if by_previous or by_first:
                if state.kind is StateKind.PENDING:
                    javaheap.offer(potential, run)
                    continue
                timeouts.append((run, run.prev_ts + own if by_previous else run.start_ts + window))
            else:
                javaheap.offer(new_partial, run)
        if not timeouts and not potential and len(new_partial) == len(ks.partial):
            # nothing expired; keep the heap exactly as it was
            emitted = self._emit(ks, potential, ks.partial) if ks.completed else []
            return emitted, []
        emitted = self._emit(ks, potential, new_partial)
        ks.partial = new_partial
        return emitted, timeouts

    def deadline(self, ks: KeyState) -> int | None:
        """The earliest timestamp at which some run of ``ks`` expires."""
        best: int | None = None
        window = self.window_ms
        for run in ks.partial:
            state = run.state
            if state.kind is StateKind.START:
                continue
            if window > 0:
                d = run.start_ts + window
                if best is None or d < best:
                    best = d
            own = state.window_ms
            if own > 0:
                d = run.prev_ts + own
                if best is None or d < best:
                    best = d
        return best

    # -- processMatchesAccordingToSkipStrategy ------------------------------------------

    def _emit(self, ks: KeyState, potential: list[Run], partial: list[Run]) -> list[Run]:
        completed = ks.completed
        for run in potential:
            javaheap.offer(completed, run)
        if not completed:
            return []
        skips = self.skip.skips
        out: list[Run] = []
        while completed:
            earliest = completed[0]
            if skips and partial and earliest.order > partial[0].order:
                break
            javaheap.poll(completed)
            if skips:
                self._prune(partial, completed, earliest)
            out.append(earliest)
        return out

    def _prune(self, partial: list[Run], completed: list[Run], match: Run) -> None:
        """Drop the partial and completed matches the skip strategy discards after ``match``."""
        pruning = self._pruning_seq(match.node)
        if pruning is None:
            return
        if self.skip.kind in (SkipKind.SKIP_TO_FIRST, SkipKind.SKIP_TO_LAST):

            def doomed(run: Run) -> bool:
                return run.order != NOT_STARTED and run.order < pruning

        else:

            def doomed(run: Run) -> bool:
                return run.order != NOT_STARTED and run.order <= pruning

        javaheap.remove_if(partial, doomed)
        javaheap.remove_if(completed, doomed)

    def _pruning_seq(self, node: Node | None) -> int | None:
        nodes = path(node)
        kind = self.skip.kind
        if kind is SkipKind.SKIP_PAST_LAST_EVENT:
            return max((n.seq for n in nodes), default=None)
        if kind is SkipKind.SKIP_TO_NEXT:
            return nodes[0].seq if nodes else None
        named = [n.seq for n in nodes if n.name == self.skip.stage]
        if not named:
            return None
        return named[0] if kind is SkipKind.SKIP_TO_FIRST else named[-1]
