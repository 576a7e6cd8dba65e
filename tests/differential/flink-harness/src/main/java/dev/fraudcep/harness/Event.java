package dev.fraudcep.harness;

import java.util.Objects;

/**
 * The event type fed to Flink CEP.
 *
 * <p>A Flink POJO (public no-arg constructor, public fields) so that Flink's own POJO serializer
 * handles it. {@code idx} is the position of the event in the case's event list; it makes every
 * event distinct and lets the harness map matched events back to the case's original "id" values.
 * {@code key} is the partition key ({@code ""} when the case gives none).
 */
public class Event {
    public int idx;
    public long ts;
    public String kind;
    public long value;
    public String key = "";

    public Event() {}

    public Event(int idx, long ts, String kind, long value, String key) {
        this.idx = idx;
        this.ts = ts;
        this.kind = kind;
        this.value = value;
        this.key = key;
    }

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (!(o instanceof Event)) {
            return false;
        }
        Event e = (Event) o;
        return idx == e.idx
                && ts == e.ts
                && value == e.value
                && Objects.equals(kind, e.kind)
                && Objects.equals(key, e.key);
    }

    @Override
    public int hashCode() {
        return Objects.hash(idx, ts, kind, value, key);
    }

    @Override
    public String toString() {
        return "Event{idx=" + idx + ", ts=" + ts + ", kind=" + kind + ", value=" + value + ", key=" + key + "}";
    }
}
