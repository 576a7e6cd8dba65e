package dev.fraudcep.harness;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.api.common.serialization.SerializerConfigImpl;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.cep.functions.PatternProcessFunction;
import org.apache.flink.cep.functions.TimedOutPartialMatchHandler;
import org.apache.flink.cep.nfa.aftermatch.AfterMatchSkipStrategy;
import org.apache.flink.cep.nfa.compiler.NFACompiler;
import org.apache.flink.cep.operator.CepOperator;
import org.apache.flink.cep.pattern.Pattern;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.apache.flink.util.Collector;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Runs one case through Flink's real {@link CepOperator} in event time.
 *
 * <p>The operator is wired the way Flink's {@code PatternStream} wires it (NFA compiled with
 * timeout handling because the process function is a {@link TimedOutPartialMatchHandler}; the
 * pattern's own after-match skip strategy; no comparator; no late-data tag) and driven through
 * Flink's keyed operator test harness: every event goes in with its timestamp under its key (one
 * key for events without one), each followed by a bounded-out-of-orderness watermark when the
 * case asks for them, then a final watermark of {@code Long.MAX_VALUE} flushes the buffered events
 * and all timers.
 */
final class CaseRunner {

    private static final JsonNodeFactory NF = JsonNodeFactory.instance;

    private static final TypeSerializer<Event> EVENT_SERIALIZER =
            TypeInformation.of(Event.class).createSerializer(new SerializerConfigImpl());

    private CaseRunner() {}

    /** The partition key of an event: its "key" as JSON text ("" for events without one). */
    static final class EventKey implements KeySelector<Event, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public String getKey(Event value) {
            return value.key;
        }
    }

    /** Collects matches and timed-out partial matches, in the order Flink reports them. */
    static final class Sink {
        final List<JsonNode> originalIds;
        final ArrayNode matches = NF.arrayNode();
        final ArrayNode timeouts = NF.arrayNode();
        // How many input events had gone in when each match / timeout came out.
        final ArrayNode matchesAfter = NF.arrayNode();
        final ArrayNode timeoutsAfter = NF.arrayNode();
        int eventsIn = 0;

        Sink(List<JsonNode> originalIds) {
            this.originalIds = originalIds;
        }

        ArrayNode render(Map<String, List<Event>> match) {
            ArrayNode m = NF.arrayNode();
            for (Map.Entry<String, List<Event>> e : match.entrySet()) {
                ArrayNode ids = NF.arrayNode();
                for (Event ev : e.getValue()) {
                    ids.add(originalIds.get(ev.idx));
                }
                m.add(NF.arrayNode().add(e.getKey()).add(ids));
            }
            return m;
        }

        void match(Map<String, List<Event>> match) {
            Limits.checkTime();
            if (matches.size() >= Limits.MAX_RESULTS) {
                throw new Limits.LimitExceededException(
                        "more than " + Limits.MAX_RESULTS + " matches");
            }
            matches.add(render(match));
            matchesAfter.add(eventsIn);
        }

        void timeout(Map<String, List<Event>> match, long ts) {
            Limits.checkTime();
            if (timeouts.size() >= Limits.MAX_RESULTS) {
                throw new Limits.LimitExceededException(
                        "more than " + Limits.MAX_RESULTS + " timed-out partial matches");
            }
            ObjectNode t = NF.objectNode();
            t.put("timeout_ts", ts);
            t.set("events", render(match));
            timeouts.add(t);
            timeoutsAfter.add(eventsIn);
        }
    }

    /** The user function given to the operator: records into the per-case {@link Sink}. */
    static final class Recorder extends PatternProcessFunction<Event, Object>
            implements TimedOutPartialMatchHandler<Event> {
        private static final long serialVersionUID = 1L;
        private final transient Sink sink;

        Recorder(Sink sink) {
            this.sink = sink;
        }

        @Override
        public void processMatch(
                Map<String, List<Event>> match, Context ctx, Collector<Object> out) {
            sink.match(match);
        }

        @Override
        public void processTimedOutMatch(Map<String, List<Event>> match, Context ctx) {
            sink.timeout(match, ctx.timestamp());
        }
    }

    static ObjectNode result(JsonNode id, String error, ArrayNode matches, ArrayNode timeouts) {
        ObjectNode r = NF.objectNode();
        r.set("id", id == null ? NF.nullNode() : id);
        if (error == null) {
            r.putNull("error");
        } else {
            r.put("error", error);
        }
        r.set("matches", matches == null ? NF.arrayNode() : matches);
        r.set("timeouts", timeouts == null ? NF.arrayNode() : timeouts);
        return r;
    }

    static String describe(Throwable t) {
        return t.getClass().getSimpleName() + ": " + t.getMessage();
    }

    static Throwable rootCause(Throwable t) {
        Throwable c = t;
        while (c.getCause() != null && c.getCause() != c) {
            c = c.getCause();
        }
        return c;
    }

    static Limits.LimitExceededException findLimit(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof Limits.LimitExceededException) {
                return (Limits.LimitExceededException) c;
            }
            if (c.getCause() == c) {
                break;
            }
        }
        return null;
    }

    /** Runs one case; never throws for a bad case (errors are reported in the result). */
    static ObjectNode run(JsonNode c) {
        JsonNode id = c.get("id");

        // --- events -------------------------------------------------------------------------
        List<JsonNode> originalIds = new ArrayList<>();
        List<Event> events = new ArrayList<>();
        Long lag;
        try {
            JsonNode evs = Json.required(c, "events");
            if (!evs.isArray()) {
                throw new CaseFormatException("events must be an array");
            }
            for (JsonNode e : evs) {
                int idx = events.size();
                JsonNode eid = e.get("id");
                originalIds.add(eid == null ? NF.numberNode(idx) : eid);
                JsonNode kind = e.get("kind");
                JsonNode value = e.get("value");
                JsonNode key = e.get("key");
                if (key != null && !key.isNull() && !key.isTextual() && !key.isIntegralNumber()) {
                    throw new CaseFormatException("event key must be a string or an integer: " + e);
                }
                if (value != null && !value.isNull() && !value.isIntegralNumber()) {
                    throw new CaseFormatException("event value must be an integer: " + e);
                }
                events.add(
                        new Event(
                                idx,
                                Json.requiredLong(e, "ts"),
                                kind == null || kind.isNull() ? null : kind.asText(),
                                value == null || value.isNull() ? 0L : value.asLong(),
                                key == null || key.isNull() ? "" : key.toString()));
            }
            lag = watermarkLag(c.get("watermarks"));
        } catch (CaseFormatException e) {
            return result(id, describe(e), null, null);
        }

        // --- pattern: build and compile (errors here = "pattern rejected") ------------------
        Pattern<Event, Event> pattern;
        NFACompiler.NFAFactory<Event> nfaFactory;
        AfterMatchSkipStrategy skip;
        try {
            skip = PatternBuilder.skipStrategy(c.get("skip"));
            pattern = PatternBuilder.build(c.get("pattern"), skip);
            // Same as PatternStreamBuilder: timeout handling on because the function handles
            // timed-out partial matches.
            nfaFactory = NFACompiler.compileFactory(pattern, true);
        } catch (Exception e) {
            return result(id, describe(e), null, null);
        }

        // --- run the operator ---------------------------------------------------------------
        Sink sink = new Sink(originalIds);
        KeyedOneInputStreamOperatorTestHarness<String, Event, Object> harness = null;
        Limits.startCase();
        try {
            CepOperator<Event, String, Object> operator =
                    new CepOperator<>(
                            EVENT_SERIALIZER,
                            false, // event time
                            nfaFactory,
                            null, // no secondary comparator: ties keep arrival order
                            pattern.getAfterMatchSkipStrategy(),
                            new Recorder(sink),
                            null);
            harness =
                    new KeyedOneInputStreamOperatorTestHarness<>(
                            operator, new EventKey(), BasicTypeInfo.STRING_TYPE_INFO);
            harness.open();
            long maxTs = Long.MIN_VALUE;
            long watermark = Long.MIN_VALUE;
            for (Event e : events) {
                Limits.checkTime();
                harness.processElement(new StreamRecord<>(e, e.ts));
                sink.eventsIn++;
                if (lag != null) {
                    // a bounded-out-of-orderness watermark after every event, as Flink's
                    // BoundedOutOfOrdernessWatermarks would emit it (max timestamp - lag - 1)
                    maxTs = Math.max(maxTs, e.ts);
                    long next = maxTs - lag - 1;
                    if (maxTs > Long.MIN_VALUE + lag + 1 && next > watermark) {
                        watermark = next;
                        harness.processWatermark(new Watermark(watermark));
                    }
                }
            }
            harness.processWatermark(new Watermark(Long.MAX_VALUE));
        } catch (Throwable t) {
            if (t instanceof ThreadDeath) {
                throw (ThreadDeath) t;
            }
            Limits.LimitExceededException limit = findLimit(t);
            if (limit != null) {
                return result(id, "limit: " + limit.getMessage(), null, null);
            }
            if (t instanceof VirtualMachineError) {
                return result(id, "limit: " + describe(t), null, null);
            }
            return result(id, "runtime " + describe(rootCause(t)), null, null);
        } finally {
            Limits.endCase();
            if (harness != null) {
                try {
                    harness.close();
                } catch (Throwable ignored) {
                    // a failed case may leave the operator half-open; nothing to report
                }
            }
        }
        ObjectNode done = result(id, null, sink.matches, sink.timeouts);
        if (lag != null) {
            done.set("matches_after", sink.matchesAfter);
            done.set("timeouts_after", sink.timeoutsAfter);
        }
        return done;
    }

    /**
     * The out-of-orderness of a case's "watermarks" object, or null when the case has none (then
     * the only watermark is the final one).
     */
    static Long watermarkLag(JsonNode w) {
        if (w == null || w.isNull()) {
            return null;
        }
        if (!w.isObject()) {
            throw new CaseFormatException("watermarks must be an object: " + w);
        }
        long lag = Json.requiredLong(w, "out_of_orderness");
        if (lag < 0) {
            throw new CaseFormatException("watermarks.out_of_orderness must be >= 0: " + w);
        }
        return lag;
    }
}
