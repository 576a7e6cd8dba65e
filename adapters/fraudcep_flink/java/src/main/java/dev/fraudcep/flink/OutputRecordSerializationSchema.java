package dev.fraudcep.flink;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.Header;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.flink.types.Row;

/**
 * Writes {@code Row(topic STRING, key BYTES, value BYTES, headers STRING[])} from a PyFlink job
 * as one Kafka record: to that topic, key and value as given ({@code null} allowed), and the
 * headers, given as alternating name, value (values written as UTF-8).
 *
 * <p>Why it exists: PyFlink's {@code KafkaRecordSerializationSchema} writes no headers and
 * routes per-record topics through a Python selector; the fraudcep jobs write alerts with
 * {@code fraudcep.rule} headers and dead letters with the original record's key and value and
 * {@code fraudcep.reason}/... headers, like the Kafka runner does.
 *
 * <p>The record's timestamp is the producer's clock, as the Kafka runner's records have; with
 * {@code elementTimestamps}, the element's (e.g. the Kafka timestamp of the record it was read
 * from). Not by default: an event-time job's elements carry event time, which may be far in
 * the past (a backfill), and a topic's time-based retention would delete such records at
 * once. The partition is left to the producer's partitioner (by key).
 */
public final class OutputRecordSerializationSchema implements KafkaRecordSerializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    private final boolean elementTimestamps;

    /** Records stamped by the producer's clock. */
    public OutputRecordSerializationSchema() {
        this(false);
    }

    /** With {@code elementTimestamps}, records carry their element's timestamp. */
    public OutputRecordSerializationSchema(boolean elementTimestamps) {
        this.elementTimestamps = elementTimestamps;
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(Row row, KafkaSinkContext context, Long timestamp) {
        String topic = (String) row.getField(0);
        if (topic == null || topic.isEmpty()) {
            throw new IllegalArgumentException("output record without a topic: " + row);
        }
        byte[] key = (byte[]) row.getField(1);
        byte[] value = (byte[]) row.getField(2);
        String[] pairs = (String[]) row.getField(3);
        List<Header> headers = new ArrayList<>();
        if (pairs != null) {
            if (pairs.length % 2 != 0) {
                throw new IllegalArgumentException("headers must alternate name, value: " + row);
            }
            for (int i = 0; i < pairs.length; i += 2) {
                String v = pairs[i + 1];
                headers.add(
                        new RecordHeader(pairs[i], v == null ? null : v.getBytes(StandardCharsets.UTF_8)));
            }
        }
        Long ts = !elementTimestamps || timestamp == null || timestamp < 0 ? null : timestamp;
        return new ProducerRecord<>(topic, null, ts, key, value, headers);
    }
}
