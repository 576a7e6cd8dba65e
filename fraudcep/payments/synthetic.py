"""Deterministic synthetic payment streams with labelled fraud scenarios.

The generator is pure Python: no I/O, no wall clock, every random choice comes from
``random.Random`` instances seeded from ``PaymentGenerator.seed``. The same configuration
and ``n`` always give the same payments in the same order (on the same Python version).

A stream is background noise plus injected fraud *scenarios*, one kind per default rule
of :mod:`fraudcep.payments.default_rules`:

``high-value-burst``
    one user makes 3 payments over 2000 (same country) within 4 minutes; caught by
    ``high-value-3-in-5m``.
``card-testing``
    a fresh card has 3 to 5 small (< 5) declined payments at one merchant, then a payment
    over 500 (at most 1500) at another merchant, all within 100 seconds; caught by
    ``card-testing``.
``geo-hop``
    a user pays more than 1500 (at most 2000) in the home country and again in another
    country 1 to 8 minutes later; caught by ``geo-hop``.

Every payment of a scenario carries ``scenario`` (the kind) and ``scenario_id``;
background payments have neither. With ``safe_noise=True`` (the default) the background
is built so that it never completes any of the three patterns, alone or together with a
scenario's payments, so the default rules alert exactly the injected scenarios:

- background amounts are at most 1500, except "big" ones (over 2000); big payments only
  come from a reserved tenth of the users (never a scenario's user), at most one per user
  in any 11 minutes;
- background declined payments are never small (under 5);
- a card-testing scenario uses a card never used elsewhere;
- a user takes part in at most one scenario in any 11 minutes;
- each scenario's own amounts stay clear of the other rules' thresholds.

``safe_noise=False`` drops the background guards (big payments from any user at any
time, small declines), for load tests that want accidental matches too.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Generic, Literal, NotRequired, Protocol, TypedDict, TypeVar

import attrs

__all__ = [
    "CARD_TESTING",
    "EXPECTED_RULE",
    "GEO_HOP",
    "HIGH_VALUE_BURST",
    "SCENARIO_KINDS",
    "AlertLike",
    "Detection",
    "Payment",
    "PaymentGenerator",
    "PaymentStream",
    "Scenario",
    "ScenarioKind",
    "match_alerts",
]

ScenarioKind = Literal["high-value-burst", "card-testing", "geo-hop"]
HIGH_VALUE_BURST: Final = "high-value-burst"
CARD_TESTING: Final = "card-testing"
GEO_HOP: Final = "geo-hop"
SCENARIO_KINDS: Final[tuple[ScenarioKind, ...]] = (HIGH_VALUE_BURST, CARD_TESTING, GEO_HOP)

#: The id of the default rule (:func:`fraudcep.payments.default_rules.default_rules`) built to
#: catch each scenario kind.
EXPECTED_RULE: Final[Mapping[ScenarioKind, str]] = {
    HIGH_VALUE_BURST: "high-value-3-in-5m",
    CARD_TESTING: "card-testing",
    GEO_HOP: "geo-hop",
}

# Amounts are drawn as integer cents, so every amount is exact to 2 decimals. The bounds
# follow the default rules' thresholds: high value > 2000, geo-hop > 1500, card testing
# small < 5 and big > 500.
_MAX_NORMAL_CENTS: Final = 150_000  # background non-big amounts: at most 1500.00
_BIG_CENTS: Final = (200_001, 600_000)  # background big: 2000.01 .. 6000.00
_BURST_CENTS: Final = (200_001, 900_000)  # high-value-burst: 2000.01 .. 9000.00
_GEO_CENTS: Final = (150_001, 200_000)  # geo-hop: 1500.01 .. 2000.00
_CARD_SMALL_CENTS: Final = (1, 499)  # card-testing probes: 0.01 .. 4.99
_CARD_BIG_CENTS: Final = (50_001, 150_000)  # card-testing cash-out: 500.01 .. 1500.00
_SMALL_DECLINE_CENTS: Final = 500  # background declines are at least 5.00

_SECOND: Final = 1_000
_MINUTE: Final = 60 * _SECOND
#: Quiet time around anything over 1500 for a user (the longest window is 10 minutes).
_COOLDOWN_MS: Final = 11 * _MINUTE
_DECLINE_RATE: Final = 0.03
_TRAVEL_RATE: Final = 0.03
_USER_PICK_TRIES: Final = 8

_COUNTRIES: Final[tuple[tuple[str, str], ...]] = (
    ("US", "USD"),
    ("GB", "GBP"),
    ("DE", "EUR"),
    ("FR", "EUR"),
    ("NL", "EUR"),
    ("ES", "EUR"),
    ("IT", "EUR"),
    ("IE", "EUR"),
    ("PL", "PLN"),
    ("SE", "SEK"),
    ("CA", "CAD"),
    ("AU", "AUD"),
    ("JP", "JPY"),
    ("SG", "SGD"),
    ("BR", "BRL"),
    ("MX", "MXN"),
    ("IN", "INR"),
)


class Payment(TypedDict):
    """One payment event (a plain ``dict`` at run time)."""

    payment_id: str
    user_id: str
    card_id: str
    merchant: str
    country: str
    amount: float
    currency: str
    status: Literal["approved", "declined"]
    ts: int
    scenario: NotRequired[ScenarioKind]
    scenario_id: NotRequired[str]


@attrs.frozen
class Scenario:
    """Ground truth for one injected fraud scenario."""

    scenario_id: str
    kind: ScenarioKind
    user_id: str
    #: The card used (for ``card-testing``: the tested card, used nowhere else).
    card_id: str
    start_ts: int
    end_ts: int
    #: The scenario's payments, in timestamp order.
    payment_ids: tuple[str, ...]

    @property
    def expected_rule(self) -> str:
        """The id of the default rule that should alert this scenario."""
        return EXPECTED_RULE[self.kind]


def _check_kinds(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    unknown = [kind for kind in value if kind not in SCENARIO_KINDS]
    if unknown:
        raise ValueError(
            f"{attribute.name}: unknown scenario kind(s) {unknown}; "
            f"choose from {list(SCENARIO_KINDS)}"
        )


@attrs.frozen(kw_only=True)
class PaymentGenerator:
    """Configuration of a synthetic payment stream; :meth:`payments` makes one.

    ``rate`` is in payments per second of event time (background ticks; scenario payments
    come on top). ``big_fraction`` is the share of background ticks that try to be a big
    payment (over 2000); with ``safe_noise`` a try whose user paid big in the last
    11 minutes becomes an ordinary payment, so the realised share can be lower.
    ``scenarios_per_10k`` is the expected number of scenarios started per 10,000 ticks.
    ``jitter_ms`` delays each payment's position in the stream by up to that many
    milliseconds of event time (bounded out-of-orderness: an event never arrives after one
    whose timestamp is more than ``jitter_ms`` larger); 0 gives timestamp order.
    """

    seed: int = 7
    users: int = attrs.field(default=10_000, validator=attrs.validators.ge(2))
    rate: float = attrs.field(default=200.0, validator=attrs.validators.gt(0.0))
    big_fraction: float = attrs.field(
        default=0.002, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    scenarios_per_10k: float = attrs.field(
        default=5.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(10_000.0)]
    )
    kinds: tuple[ScenarioKind, ...] = attrs.field(
        default=SCENARIO_KINDS, converter=tuple, validator=_check_kinds
    )
    jitter_ms: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    start_ts: int = 1_700_000_000_000
    merchants: int = attrs.field(default=5_000, validator=attrs.validators.ge(2))
    safe_noise: bool = True

    def payments(self, n: int) -> PaymentStream:
        """A stream of exactly ``n`` payments; iterate it, then read its ``scenarios``.

        Scenarios are only started when all of their payments fit in ``n``, so every
        scenario of the stream is complete. The stream ends with the payments of the
        scenarios still under way when the background stops (up to 8 minutes of event
        time after the last background payment).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return PaymentStream(self, n)

    def generate(self, n: int) -> tuple[list[Payment], tuple[Scenario, ...]]:
        """All ``n`` payments as a list, and the scenarios injected among them."""
        stream = self.payments(n)
        payments = list(stream)
        return payments, stream.scenarios

    def ground_truth(self, n: int) -> tuple[Scenario, ...]:
        """The scenarios injected in the first ``n`` payments (generates them)."""
        return self.generate(n)[1]


class PaymentStream(Iterator[Payment]):
    """An iterator over the payments of one :meth:`PaymentGenerator.payments` call.

    ``scenarios`` lists the scenarios whose payments have all been yielded so far (in the
    order of their last payment); once the stream is exhausted that is all of them.
    """

    def __init__(self, generator: PaymentGenerator, n: int) -> None:
        self.generator = generator
        self.n = n
        self._plan: dict[str, Scenario] = {}
        self._remaining: dict[str, int] = {}
        self._done: list[Scenario] = []
        self._it = _jittered(
            _Synthesizer(generator, self._planned).events(n),
            generator.jitter_ms,
            random.Random(f"fraudcep.synthetic:{generator.seed}:jitter"),
        )

    @property
    def scenarios(self) -> tuple[Scenario, ...]:
        return tuple(self._done)

    def __iter__(self) -> PaymentStream:
        return self

    def __next__(self) -> Payment:
        payment = next(self._it)
        scenario_id = payment.get("scenario_id")
        if scenario_id is not None:
            left = self._remaining[scenario_id] - 1
            self._remaining[scenario_id] = left
            if left == 0:
                self._done.append(self._plan.pop(scenario_id))
                del self._remaining[scenario_id]
        return payment

    def _planned(self, scenario: Scenario) -> None:
        self._plan[scenario.scenario_id] = scenario
        self._remaining[scenario.scenario_id] = len(scenario.payment_ids)


class _ScenarioSink(Protocol):
    def __call__(self, scenario: Scenario, /) -> None: ...


@attrs.frozen
class _Profile:
    index: int
    user_id: str
    cards: tuple[str, ...]
    home: int  # index into _COUNTRIES
    currency: str


class _Synthesizer:
    """The state of one generation run; :meth:`events` yields payments in ts order."""

    def __init__(self, config: PaymentGenerator, on_scenario: _ScenarioSink) -> None:
        self.config = config
        self.on_scenario = on_scenario
        # the seeds' text is part of the stream's identity: the same seed gives the same payments
        # in every release (it names the module as it once was called; keep it as it is)
        self.rng = random.Random(f"fraudcep.synthetic:{config.seed}:events")
        self.random = self.rng.random
        profiles = random.Random(f"fraudcep.synthetic:{config.seed}:profiles")
        self.home = [int(profiles.random() * len(_COUNTRIES)) for _ in range(config.users)]
        self.card_count = [1 + (profiles.random() < 0.3) for _ in range(config.users)]
        self.profiles: list[_Profile | None] = [None] * config.users  # made when first used
        self.merchants = [f"m{k:05d}" for k in range(config.merchants)]
        # Users [0, big_users) make the background's big payments; scenarios use the rest.
        self.big_users = max(1, config.users // 10)
        self.last_big: dict[int, int] = {}
        self.busy_until: dict[int, int] = {}
        self.next_payment = 0
        self.next_scenario = 0

    # -- the event loop ---------------------------------------------------------------

    def events(self, n: int) -> Iterator[Payment]:
        rng = self.rng
        config = self.config
        mean_gap_ms = 1000.0 / config.rate
        scenario_p = config.scenarios_per_10k / 10_000 if config.kinds else 0.0
        pending: list[tuple[int, int, Payment]] = []  # (ts, order, payment)
        order = 0
        produced = 0  # background payments yielded + scenario payments scheduled
        clock = float(config.start_ts)
        while produced < n:
            clock += rng.expovariate(1.0) * mean_gap_ms
            t = int(clock)
            while pending and pending[0][0] <= t:
                yield heapq.heappop(pending)[2]
            if scenario_p and self.random() < scenario_p:
                scenario = self._scenario(t, n - produced)
                if scenario:
                    for payment in scenario:
                        heapq.heappush(pending, (payment["ts"], order, payment))
                        order += 1
                    produced += len(scenario)
                    continue
            produced += 1
            yield self._background(t)
        while pending:
            yield heapq.heappop(pending)[2]

    # -- background -------------------------------------------------------------------

    def _background(self, t: int) -> Payment:
        random = self.random
        config = self.config
        cents = 0
        if config.big_fraction and random() < config.big_fraction:
            if config.safe_noise:
                user = int(random() * self.big_users)
                if t - self.last_big.get(user, t - _COOLDOWN_MS) >= _COOLDOWN_MS:
                    self.last_big[user] = t
                    cents = self.rng.randint(*_BIG_CENTS)
            else:
                user = int(random() * config.users)
                cents = self.rng.randint(*_BIG_CENTS)
        else:
            user = int(random() * config.users)
        if not cents:
            cents = min(max(int(self.rng.lognormvariate(3.4, 1.1) * 100), 50), _MAX_NORMAL_CENTS)
        declined = random() < _DECLINE_RATE
        if declined and config.safe_noise and cents < _SMALL_DECLINE_CENTS:
            declined = False
        profile = self._profile(user)
        country = profile.home
        if random() < _TRAVEL_RATE:
            country = int(random() * len(_COUNTRIES))
        return self._payment(
            t,
            profile,
            profile.cards[int(random() * len(profile.cards))],
            self._merchant(),
            country,
            cents,
            "declined" if declined else "approved",
        )

    # -- scenarios --------------------------------------------------------------------

    def _scenario(self, t: int, budget: int) -> list[Payment] | None:
        """Plan a scenario starting at ``t`` with at most ``budget`` payments, or None."""
        user = self._free_user(t)
        if user is None:
            return None
        kind = self.rng.choice(self.config.kinds)
        if kind == HIGH_VALUE_BURST:
            size, build = 3, self._high_value_burst
        elif kind == CARD_TESTING:
            size, build = 1 + self.rng.randint(3, 5), self._card_testing
        else:
            size, build = 2, self._geo_hop
        if size > budget:
            return None
        number = self.next_scenario
        self.next_scenario += 1
        scenario_id = f"sc-{number:05d}"
        profile = self._profile(user)
        payments, card = build(profile, t, size, number)
        for payment in payments:
            payment["scenario"] = kind
            payment["scenario_id"] = scenario_id
        end_ts = payments[-1]["ts"]
        self.busy_until[user] = end_ts + _COOLDOWN_MS
        self.on_scenario(
            Scenario(
                scenario_id=scenario_id,
                kind=kind,
                user_id=profile.user_id,
                card_id=card,
                start_ts=payments[0]["ts"],
                end_ts=end_ts,
                payment_ids=tuple(p["payment_id"] for p in payments),
            )
        )
        return payments

    def _free_user(self, t: int) -> int | None:
        """A user outside the big-payment pool with no scenario in the last 11 minutes."""
        for _ in range(_USER_PICK_TRIES):
            user = self.rng.randrange(self.big_users, self.config.users)
            if self.busy_until.get(user, t) <= t:
                return user
        return None

    def _high_value_burst(
        self, profile: _Profile, t: int, size: int, number: int
    ) -> tuple[list[Payment], str]:
        rng = self.rng
        card = rng.choice(profile.cards)
        payments = []
        for i in range(size):
            if i:
                t += rng.randint(20 * _SECOND, 110 * _SECOND)  # 3 payments: span <= 220 s
            cents = rng.randint(*_BURST_CENTS)
            payments.append(
                self._payment(t, profile, card, self._merchant(), profile.home, cents, "approved")
            )
        return payments, card

    def _card_testing(
        self, profile: _Profile, t: int, size: int, number: int
    ) -> tuple[list[Payment], str]:
        rng = self.rng
        card = f"card-{profile.index:07d}-t{number}"  # a card used nowhere else
        probe_merchant = self._merchant()
        cashout_merchant = self._merchant()
        while cashout_merchant == probe_merchant:
            cashout_merchant = self._merchant()
        country = profile.home
        payments = []
        for i in range(size - 1):  # probes: span <= 4 * 12 s
            if i:
                t += rng.randint(3 * _SECOND, 12 * _SECOND)
            cents = rng.randint(*_CARD_SMALL_CENTS)
            payments.append(
                self._payment(t, profile, card, probe_merchant, country, cents, "declined")
            )
        t += rng.randint(10 * _SECOND, 50 * _SECOND)  # cash-out: whole span <= 98 s
        cents = rng.randint(*_CARD_BIG_CENTS)
        payments.append(
            self._payment(t, profile, card, cashout_merchant, country, cents, "approved")
        )
        return payments, card

    def _geo_hop(
        self, profile: _Profile, t: int, size: int, number: int
    ) -> tuple[list[Payment], str]:
        rng = self.rng
        card = rng.choice(profile.cards)
        home = profile.home
        abroad = rng.randrange(len(_COUNTRIES) - 1)
        abroad += abroad >= home
        first = self._payment(
            t, profile, card, self._merchant(), home, rng.randint(*_GEO_CENTS), "approved"
        )
        t += rng.randint(1 * _MINUTE, 8 * _MINUTE)
        second = self._payment(
            t, profile, card, self._merchant(), abroad, rng.randint(*_GEO_CENTS), "approved"
        )
        return [first, second], card

    # -- helpers ----------------------------------------------------------------------

    def _profile(self, user: int) -> _Profile:
        profile = self.profiles[user]
        if profile is None:
            home = self.home[user]
            profile = self.profiles[user] = _Profile(
                index=user,
                user_id=f"u{user:07d}",
                cards=tuple(f"card-{user:07d}-{i}" for i in range(self.card_count[user])),
                home=home,
                currency=_COUNTRIES[home][1],
            )
        return profile

    def _merchant(self) -> str:
        merchants = self.merchants
        return merchants[int(self.random() * len(merchants))]

    def _payment(
        self,
        t: int,
        profile: _Profile,
        card: str,
        merchant: str,
        country: int,
        cents: int,
        status: Literal["approved", "declined"],
    ) -> Payment:
        payment_id = f"p{self.next_payment:010d}"
        self.next_payment += 1
        return {
            "payment_id": payment_id,
            "user_id": profile.user_id,
            "card_id": card,
            "merchant": merchant,
            "country": _COUNTRIES[country][0],
            "amount": cents / 100,
            "currency": profile.currency,
            "status": status,
            "ts": t,
        }


def _jittered(events: Iterable[Payment], jitter_ms: int, rng: random.Random) -> Iterator[Payment]:
    """Re-order ts-ordered ``events`` by ``ts + U[0, jitter_ms]`` (ties: input order).

    A payment is yielded once no later input can arrive before it; an event therefore
    never follows one whose timestamp exceeds its own by more than ``jitter_ms``.
    """
    if not jitter_ms:
        yield from events
        return
    heap: list[tuple[int, int, Payment]] = []
    for order, payment in enumerate(events):
        t = payment["ts"]
        heapq.heappush(heap, (t + rng.randint(0, jitter_ms), order, payment))
        while heap and heap[0][0] <= t:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


# -- scoring alerts against the ground truth ---------------------------------------------


class AlertLike(Protocol):
    """What :func:`match_alerts` reads from an alert (``fraudcep.Alert`` has it)."""

    @property
    def rule_id(self) -> str: ...

    @property
    def events(self) -> Mapping[str, Iterable[Any]]: ...


A = TypeVar("A", bound=AlertLike)


@attrs.frozen
class Detection(Generic[A]):
    """How a set of alerts compares with the injected scenarios."""

    detected: tuple[Scenario, ...]
    missed: tuple[Scenario, ...]
    #: Alerts that are not the first alert of one scenario by its expected rule, with
    #: only that scenario's payments.
    unexpected: tuple[A, ...]

    @property
    def ok(self) -> bool:
        """Every scenario alerted, and nothing else."""
        return not self.missed and not self.unexpected


def match_alerts(alerts: Iterable[A], scenarios: Iterable[Scenario]) -> Detection[A]:
    """Score ``alerts`` against ``scenarios`` (e.g. ``PaymentStream.scenarios``).

    An alert detects a scenario when all its events carry that scenario's id and its
    ``rule_id`` is the scenario's :attr:`Scenario.expected_rule`. A second alert for the
    same scenario, or any other alert, is unexpected.
    """
    by_id = {scenario.scenario_id: scenario for scenario in scenarios}
    detected: dict[str, Scenario] = {}
    unexpected: list[A] = []
    for alert in alerts:
        labels = {_scenario_label(event) for events in alert.events.values() for event in events}
        label = labels.pop() if len(labels) == 1 else None
        scenario = by_id.get(label) if label is not None else None
        if (
            scenario is None
            or scenario.expected_rule != alert.rule_id
            or scenario.scenario_id in detected
        ):
            unexpected.append(alert)
        else:
            detected[scenario.scenario_id] = scenario
    return Detection(
        detected=tuple(s for s in by_id.values() if s.scenario_id in detected),
        missed=tuple(s for s in by_id.values() if s.scenario_id not in detected),
        unexpected=tuple(unexpected),
    )


def _scenario_label(event: Any) -> str | None:
    if isinstance(event, Mapping):
        label = event.get("scenario_id")
    else:
        label = getattr(event, "scenario_id", None)
    return label if isinstance(label, str) else None
