package dev.fraudcep.harness;

import com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.cep.nfa.aftermatch.AfterMatchSkipStrategy;
import org.apache.flink.cep.pattern.Pattern;
import org.apache.flink.cep.pattern.WithinType;

import java.time.Duration;

/**
 * Builds a Flink {@link Pattern} from the case format's stage list, calling Flink's public Pattern
 * API exactly as the stages say.
 *
 * <p>Per stage the calls are made in this fixed order (the order matters for some of Flink's
 * checks, e.g. {@code greedy()} after {@code allowCombinations()} is rejected):
 *
 * <ol>
 *   <li>the connecting call: {@code begin / next / followedBy / followedByAny / notNext /
 *       notFollowedBy} (with a nested Pattern for group stages);
 *   <li>the "conditions" list in order: {@code where(c)} / {@code or(c)};
 *   <li>the quantifier: {@code times(n)} (from == to), {@code times(from, to)}, {@code
 *       timesOrMore(from)}, {@code oneOrMore()};
 *   <li>the inner contiguity: {@code consecutive()} / {@code allowCombinations()};
 *   <li>{@code optional()}, then {@code greedy()};
 *   <li>{@code until(c)};
 *   <li>each "within" entry: {@code within(Duration.ofMillis(ms), WithinType)}.
 * </ol>
 */
final class PatternBuilder {

    private PatternBuilder() {}

    static AfterMatchSkipStrategy skipStrategy(JsonNode skip) {
        if (skip == null || skip.isNull()) {
            return AfterMatchSkipStrategy.noSkip();
        }
        String type = Json.requiredText(skip, "type");
        boolean throwOnMiss = Json.optBool(skip, "throw_on_miss");
        switch (type) {
            case "no_skip":
                return AfterMatchSkipStrategy.noSkip();
            case "skip_to_next":
                return AfterMatchSkipStrategy.skipToNext();
            case "skip_past_last_event":
                return AfterMatchSkipStrategy.skipPastLastEvent();
            case "skip_to_first":
                {
                    var s = AfterMatchSkipStrategy.skipToFirst(Json.requiredText(skip, "name"));
                    return throwOnMiss ? s.throwExceptionOnMiss() : s;
                }
            case "skip_to_last":
                {
                    var s = AfterMatchSkipStrategy.skipToLast(Json.requiredText(skip, "name"));
                    return throwOnMiss ? s.throwExceptionOnMiss() : s;
                }
            default:
                throw new CaseFormatException("unknown skip type: " + type);
        }
    }

    /**
     * Builds a pattern sequence. {@code skip} is the after-match skip strategy for the top-level
     * sequence, or null for a nested group (which then starts with plain {@code begin}).
     */
    static Pattern<Event, Event> build(JsonNode stages, AfterMatchSkipStrategy skip) {
        if (stages == null || !stages.isArray() || stages.size() == 0) {
            throw new CaseFormatException("pattern must be a non-empty array of stages");
        }
        Pattern<Event, Event> p = null;
        for (int i = 0; i < stages.size(); i++) {
            JsonNode st = stages.get(i);
            if (!st.isObject()) {
                throw new CaseFormatException("stage must be an object: " + st);
            }
            p = connect(p, st, i == 0, skip);
            configure(p, st);
        }
        return p;
    }

    private static Pattern<Event, Event> connect(
            Pattern<Event, Event> prev, JsonNode st, boolean first, AfterMatchSkipStrategy skip) {
        String op = Json.requiredText(st, "op");
        JsonNode groupNode = st.get("group");
        boolean isGroup = groupNode != null && !groupNode.isNull();
        String name = isGroup ? Json.optText(st, "name", "group") : Json.requiredText(st, "name");

        if (first != op.equals("begin")) {
            throw new CaseFormatException(
                    first
                            ? "the first stage must have op \"begin\", got \"" + op + "\""
                            : "op \"begin\" is only allowed on the first stage");
        }

        if (isGroup) {
            Pattern<Event, Event> group = build(groupNode, null);
            switch (op) {
                case "begin":
                    return skip == null ? Pattern.begin(group) : Pattern.begin(group, skip);
                case "next":
                    return prev.next(group);
                case "followed_by":
                    return prev.followedBy(group);
                case "followed_by_any":
                    return prev.followedByAny(group);
                case "not_next":
                case "not_followed_by":
                    throw new CaseFormatException(
                            "Flink's Pattern API has no " + op + " taking a group pattern");
                default:
                    throw new CaseFormatException("unknown op: " + op);
            }
        }

        switch (op) {
            case "begin":
                return skip == null ? Pattern.<Event>begin(name) : Pattern.<Event>begin(name, skip);
            case "next":
                return prev.next(name);
            case "followed_by":
                return prev.followedBy(name);
            case "followed_by_any":
                return prev.followedByAny(name);
            case "not_next":
                return prev.notNext(name);
            case "not_followed_by":
                return prev.notFollowedBy(name);
            default:
                throw new CaseFormatException("unknown op: " + op);
        }
    }

    private static void configure(Pattern<Event, Event> p, JsonNode st) {
        JsonNode conds = st.get("conditions");
        if (conds != null && !conds.isNull()) {
            if (!conds.isArray()) {
                throw new CaseFormatException("conditions must be an array: " + conds);
            }
            for (JsonNode c : conds) {
                if (!c.isArray() || c.size() != 2 || !c.get(0).isTextual()) {
                    throw new CaseFormatException(
                            "each condition must be [\"where\"|\"or\", COND]: " + c);
                }
                String how = c.get(0).asText();
                Conditions.Cond cond = Conditions.toCondition(c.get(1));
                if (how.equals("where")) {
                    p.where(cond);
                } else if (how.equals("or")) {
                    p.or(cond);
                } else {
                    throw new CaseFormatException("unknown condition combinator: " + how);
                }
            }
        }

        JsonNode q = st.get("quantifier");
        if (q != null && !q.isNull()) {
            String kind = Json.optText(q, "kind", "single");
            switch (kind) {
                case "single":
                    break;
                case "times":
                    {
                        int from = Json.requiredInt(q, "from");
                        JsonNode toNode = q.get("to");
                        int to = (toNode == null || toNode.isNull()) ? from : Json.requiredInt(q, "to");
                        if (from == to) {
                            p.times(from);
                        } else {
                            p.times(from, to);
                        }
                        break;
                    }
                case "times_or_more":
                    p.timesOrMore(Json.requiredInt(q, "from"));
                    break;
                case "one_or_more":
                    p.oneOrMore();
                    break;
                default:
                    throw new CaseFormatException("unknown quantifier kind: " + kind);
            }
            String inner = Json.optText(q, "inner", "relaxed");
            switch (inner) {
                case "relaxed":
                    break;
                case "consecutive":
                    p.consecutive();
                    break;
                case "allow_combinations":
                    p.allowCombinations();
                    break;
                default:
                    throw new CaseFormatException("unknown inner contiguity: " + inner);
            }
            if (Json.optBool(q, "optional")) {
                p.optional();
            }
            if (Json.optBool(q, "greedy")) {
                p.greedy();
            }
        }

        JsonNode until = st.get("until");
        if (until != null && !until.isNull()) {
            p.until(Conditions.toCondition(until));
        }

        JsonNode within = st.get("within");
        if (within != null && !within.isNull()) {
            if (!within.isArray()) {
                throw new CaseFormatException("within must be an array: " + within);
            }
            for (JsonNode w : within) {
                long ms = Json.requiredLong(w, "ms");
                String type = Json.optText(w, "type", "FIRST_AND_LAST");
                WithinType wt;
                try {
                    wt = WithinType.valueOf(type);
                } catch (IllegalArgumentException e) {
                    throw new CaseFormatException("unknown within type: " + type);
                }
                p.within(Duration.ofMillis(ms), wt);
            }
        }
    }
}
