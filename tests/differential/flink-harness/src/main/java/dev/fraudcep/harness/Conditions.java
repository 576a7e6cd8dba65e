package dev.fraudcep.harness;

import com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.cep.pattern.conditions.IterativeCondition;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;

/**
 * Translation of the case format's COND objects into Flink {@link IterativeCondition}s.
 *
 * <p>Every node is a static, serializable class: Flink's {@code Pattern.where/or/until} run the
 * closure cleaner with a serializability check on the condition.
 */
final class Conditions {

    private Conditions() {}

    /** A predicate over the current event and the partial match it would extend. */
    interface Pred extends Serializable {
        boolean test(Event e, IterativeCondition.Context<Event> ctx) throws Exception;
    }

    /** The condition handed to Flink: evaluates a {@link Pred} tree and enforces the case limits. */
    static final class Cond extends IterativeCondition<Event> {
        private static final long serialVersionUID = 1L;
        private final Pred pred;
        private final String description;

        Cond(Pred pred, String description) {
            this.pred = pred;
            this.description = description;
        }

        @Override
        public boolean filter(Event value, Context<Event> ctx) throws Exception {
            Limits.checkTime();
            return pred.test(value, ctx);
        }

        @Override
        public String toString() {
            return description;
        }
    }

    static Cond toCondition(JsonNode node) {
        return new Cond(parse(node), node == null ? "null" : node.toString());
    }

    static Pred parse(JsonNode n) {
        if (n == null || !n.isObject()) {
            throw new CaseFormatException("condition must be an object: " + n);
        }
        String type = Json.text(n, "type");
        switch (type) {
            case "true":
                return new True();
            case "kind":
                return new Kind(Json.requiredText(n, "value"));
            case "cmp":
                return new Cmp(Json.requiredText(n, "op"), Json.required(n, "value"));
            case "sum_lt":
                return new SumLt(Json.requiredText(n, "stage"), Json.required(n, "limit").asLong());
            case "and":
            case "or":
                {
                    JsonNode conds = Json.required(n, "conds");
                    if (!conds.isArray()) {
                        throw new CaseFormatException(type + ".conds must be an array");
                    }
                    List<Pred> parts = new ArrayList<>();
                    for (JsonNode c : conds) {
                        parts.add(parse(c));
                    }
                    Pred[] arr = parts.toArray(new Pred[0]);
                    return type.equals("and") ? new And(arr) : new Or(arr);
                }
            case "not":
                return new Not(parse(Json.required(n, "cond")));
            default:
                throw new CaseFormatException("unknown condition type: " + type);
        }
    }

    static final class True implements Pred {
        private static final long serialVersionUID = 1L;

        @Override
        public boolean test(Event e, IterativeCondition.Context<Event> ctx) {
            return true;
        }
    }

    static final class Kind implements Pred {
        private static final long serialVersionUID = 1L;
        private final String kind;

        Kind(String kind) {
            this.kind = kind;
        }

        @Override
        public boolean test(Event e, IterativeCondition.Context<Event> ctx) {
            return kind.equals(e.kind);
        }
    }

    static final class Cmp implements Pred {
        private static final long serialVersionUID = 1L;
        private final String op;
        private final boolean integral;
        private final long lv;
        private final double dv;

        Cmp(String op, JsonNode value) {
            switch (op) {
                case "<":
                case "<=":
                case ">":
                case ">=":
                case "==":
                case "!=":
                    break;
                default:
                    throw new CaseFormatException("unknown cmp op: " + op);
            }
            if (!value.isNumber()) {
                throw new CaseFormatException("cmp value must be a number: " + value);
            }
            this.op = op;
            this.integral = value.isIntegralNumber();
            this.lv = value.asLong();
            this.dv = value.asDouble();
        }

        @Override
        public boolean test(Event e, IterativeCondition.Context<Event> ctx) {
            int c = integral ? Long.compare(e.value, lv) : Double.compare((double) e.value, dv);
            switch (op) {
                case "<":
                    return c < 0;
                case "<=":
                    return c <= 0;
                case ">":
                    return c > 0;
                case ">=":
                    return c >= 0;
                case "==":
                    return c == 0;
                default:
                    return c != 0;
            }
        }
    }

    /** Iterative: sum of "value" over events already taken by {@code stage}, plus this event's. */
    static final class SumLt implements Pred {
        private static final long serialVersionUID = 1L;
        private final String stage;
        private final long limit;

        SumLt(String stage, long limit) {
            this.stage = stage;
            this.limit = limit;
        }

        @Override
        public boolean test(Event e, IterativeCondition.Context<Event> ctx) throws Exception {
            long sum = e.value;
            for (Event prev : ctx.getEventsForPattern(stage)) {
                sum += prev.value;
            }
            return sum < limit;
        }
    }

    static final class And implements Pred {
        private static final long serialVersionUID = 1L;
        private final Pred[] parts;

        And(Pred[] parts) {
            this.parts = parts;
        }

        @Override
        public boolean test(Event e, IterativeCondition.Context<Event> ctx) throws Exception {
            for (Pred p : parts) {
                if (!p.test(e, ctx)) {
                    return false;
                }
            }
            return true;
        }
    }

    static final class Or implements Pred {
        private static final long serialVersionUID = 1L;
        private final Pred[] parts;

        Or(Pred[] parts) {
            this.parts = parts;
        }

        @Override
        public boolean test(Event e, IterativeCondition.Context<Event> ctx) throws Exception {
            for (Pred p : parts) {
                if (p.test(e, ctx)) {
                    return true;
                }
            }
            return false;
        }
    }

    static final class Not implements Pred {
        private static final long serialVersionUID = 1L;
        private final Pred inner;

        Not(Pred inner) {
            this.inner = inner;
        }

        @Override
        public boolean test(Event e, IterativeCondition.Context<Event> ctx) throws Exception {
            return !inner.test(e, ctx);
        }
    }
}
