"""Quickstart: the seed rule "3 payments over 2000 within 5 minutes" on a few payments.

Run with ``python examples/quickstart.py`` after ``scripts/bootstrap.sh``.
"""

from datetime import timedelta

from fraudcep import Engine, Pattern, Rule, SkipStrategy

pattern = (
    Pattern.begin("first", skip=SkipStrategy.skip_past_last_event())
    .where(lambda e: e["amount"] > 2000)
    .times(3)
    .within(timedelta(minutes=5))
)
rule = Rule("high-value-3-in-5m", pattern, key="user_id")
engine = Engine([rule], timestamp="ts")

# In timestamp order (the default engine allows no out-of-orderness). Alice makes three
# payments over 2000 within 4 minutes; Bob's three are spread over 7 minutes.
MINUTE = 60_000
payments = [
    {"payment_id": "p1", "user_id": "alice", "amount": 2500.00, "ts": 0 * MINUTE},
    {"payment_id": "p2", "user_id": "bob", "amount": 3100.00, "ts": 1 * MINUTE},
    {"payment_id": "p3", "user_id": "alice", "amount": 12.50, "ts": 1 * MINUTE + 5_000},
    {"payment_id": "p4", "user_id": "alice", "amount": 2150.00, "ts": 2 * MINUTE},
    {"payment_id": "p5", "user_id": "alice", "amount": 4999.99, "ts": 4 * MINUTE},
    {"payment_id": "p6", "user_id": "bob", "amount": 2600.00, "ts": 7 * MINUTE},
    {"payment_id": "p7", "user_id": "bob", "amount": 2050.00, "ts": 8 * MINUTE},
]

alerts = []
for payment in payments:
    alerts += engine.process(payment)
alerts += engine.flush()  # end of input: the watermark moves to +infinity

for alert in alerts:
    print(f"alert {alert.alert_id} rule={alert.rule_id} key={alert.key}")
    print(f"  from {alert.first_ts} ms to {alert.last_ts} ms")
    for stage, events in alert.events.items():
        for event in events:
            print(f"  {stage}: {event['payment_id']} amount={event['amount']:.2f}")
