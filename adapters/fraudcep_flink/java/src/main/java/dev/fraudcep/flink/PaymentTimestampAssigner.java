package dev.fraudcep.flink;

import java.nio.charset.StandardCharsets;
import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.types.Row;

/**
 * The event time of a raw Kafka record ({@link RawRecordDeserializationSchema}'s row): the
 * integer value of one top-level field of the JSON object in its value, e.g. {@code "ts"}.
 *
 * <p>Why it exists: set on the Kafka source, it lets the source make watermarks per partition
 * (per split), as the Kafka runner keeps event time per partition, instead of per source
 * reader after decoding, where the partitions a reader interleaves would make each other's
 * payments late. The job still decodes and validates every record in Python; this only reads
 * the time. A value it cannot read (not a JSON object, no such field, not an integer, a
 * duplicated field) has no event time here ({@code Long.MIN_VALUE}, which moves no
 * watermark); the decoder dead-letters such records anyway.
 */
public final class PaymentTimestampAssigner implements SerializableTimestampAssigner<Row> {
    private static final long serialVersionUID = 1L;
    /** Value fields are at index 5 of the raw record row. */
    private static final int VALUE = 5;

    private final byte[] field;

    public PaymentTimestampAssigner(String field) {
        this.field = field.getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public long extractTimestamp(Row record, long recordTimestamp) {
        byte[] value = (byte[]) record.getField(VALUE);
        return value == null ? Long.MIN_VALUE : read(value);
    }

    /** The field's integer value at the top level of {@code json}, or MIN_VALUE. */
    public long read(byte[] json) {
        int[] at = {skipSpace(json, 0)};
        if (at[0] >= json.length || json[at[0]] != '{') {
            return Long.MIN_VALUE;
        }
        at[0]++;
        long found = Long.MIN_VALUE;
        boolean seen = false;
        while (true) {
            at[0] = skipSpace(json, at[0]);
            if (at[0] >= json.length) {
                return Long.MIN_VALUE;
            }
            if (json[at[0]] == '}') {
                return found;
            }
            if (json[at[0]] != '"') {
                return Long.MIN_VALUE;
            }
            int nameStart = at[0] + 1;
            int nameEnd = skipString(json, at[0]);
            if (nameEnd < 0) {
                return Long.MIN_VALUE;
            }
            at[0] = skipSpace(json, nameEnd);
            if (at[0] >= json.length || json[at[0]] != ':') {
                return Long.MIN_VALUE;
            }
            at[0] = skipSpace(json, at[0] + 1);
            if (isField(json, nameStart, nameEnd - 1)) {
                if (seen) {
                    return Long.MIN_VALUE; // a duplicated field: the decoder refuses it
                }
                seen = true;
                found = readInteger(json, at);
            } else if (!skipValue(json, at)) {
                return Long.MIN_VALUE;
            }
            at[0] = skipSpace(json, at[0]);
            if (at[0] < json.length && json[at[0]] == ',') {
                at[0]++;
            }
        }
    }

    private boolean isField(byte[] json, int start, int end) {
        if (end - start != field.length) {
            return false; // names with escapes are not the plain field name
        }
        for (int i = 0; i < field.length; i++) {
            if (json[start + i] != field[i]) {
                return false;
            }
        }
        return true;
    }

    /** An integer (no fraction, no exponent) at {@code at[0]}, moved past it; else MIN. */
    private static long readInteger(byte[] json, int[] at) {
        int i = at[0];
        boolean negative = i < json.length && json[i] == '-';
        if (negative) {
            i++;
        }
        int digits = 0;
        long value = 0;
        while (i < json.length && json[i] >= '0' && json[i] <= '9') {
            if (++digits > 18) {
                return Long.MIN_VALUE;
            }
            value = value * 10 + (json[i] - '0');
            i++;
        }
        if (digits == 0 || (i < json.length && (json[i] == '.' || json[i] == 'e' || json[i] == 'E'))) {
            at[0] = i;
            skipValue(json, at);
            return Long.MIN_VALUE;
        }
        at[0] = i;
        return negative ? -value : value;
    }

    private static int skipSpace(byte[] json, int i) {
        while (i < json.length && (json[i] == ' ' || json[i] == '\t' || json[i] == '\n' || json[i] == '\r')) {
            i++;
        }
        return i;
    }

    /** The index after the string starting at {@code i} (a quote), or -1. */
    private static int skipString(byte[] json, int i) {
        for (i = i + 1; i < json.length; i++) {
            if (json[i] == '\\') {
                i++;
            } else if (json[i] == '"') {
                return i + 1;
            }
        }
        return -1;
    }

    /** Moves {@code at[0]} past one value (any nesting, no recursion); false if malformed. */
    private static boolean skipValue(byte[] json, int[] at) {
        int depth = 0;
        int i = at[0];
        while (i < json.length) {
            byte b = json[i];
            if (b == '"') {
                i = skipString(json, i);
                if (i < 0) {
                    return false;
                }
                if (depth == 0) {
                    break;
                }
                continue;
            }
            if (b == '{' || b == '[') {
                depth++;
            } else if (b == '}' || b == ']') {
                if (depth == 0) {
                    break; // the end of the enclosing object
                }
                depth--;
                if (depth == 0) {
                    i++;
                    break;
                }
            } else if (depth == 0 && b == ',') {
                break;
            }
            i++;
        }
        at[0] = i;
        return true;
    }
}
