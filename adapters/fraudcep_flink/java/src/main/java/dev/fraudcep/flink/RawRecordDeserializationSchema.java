package dev.fraudcep.flink;

import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * A Kafka record as it was read, for PyFlink jobs: {@code Row(topic STRING, partition INT,
 * offset LONG, timestamp LONG, key BYTES, value BYTES)}.
 *
 * <p>Why it exists: PyFlink's {@code KafkaSource} only takes a value-only deserializer, so a
 * Python job cannot see a record's key, topic, partition, offset or timestamp (which a dead
 * letter must carry), and {@code SimpleStringSchema} mangles values that are not UTF-8. This
 * one hands over everything, bytes untouched.
 *
 * <p>{@code key} and {@code value} are {@code null} when the record has none (a tombstone has
 * a null value); {@code timestamp} is the record's timestamp in ms, or -1 (Kafka's {@code
 * NO_TIMESTAMP}) when it has none.
 */
public final class RawRecordDeserializationSchema implements KafkaRecordDeserializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    /** The field names, in order; the Python side declares the same (kafka_io.RAW_RECORD). */
    public static final String[] FIELDS = {"topic", "partition", "offset", "timestamp", "key", "value"};

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) {
        out.collect(
                Row.of(
                        record.topic(),
                        record.partition(),
                        record.offset(),
                        record.timestamp() < 0 ? -1L : record.timestamp(),
                        record.key(),
                        record.value()));
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return Types.ROW_NAMED(
                FIELDS,
                Types.STRING,
                Types.INT,
                Types.LONG,
                Types.LONG,
                PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO,
                PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
    }
}
