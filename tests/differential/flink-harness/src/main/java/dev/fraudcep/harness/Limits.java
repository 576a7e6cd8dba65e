package dev.fraudcep.harness;

/**
 * Per-case guards against runaway cases (too many results, too much time).
 *
 * <p>Both limits are configurable, the first setting found winning: the command-line options
 * {@code --max-matches=N} and {@code --timeout-ms=MS} (see {@link Main}), the system properties
 * {@code harness.maxMatches} and {@code harness.timeoutMs}, the environment variables {@code
 * FRAUDCEP_DIFF_MAX_MATCHES} and {@code FRAUDCEP_DIFF_TIMEOUT_MS}; otherwise 20,000 matches
 * (or timed-out partial matches) and 10,000 ms per case.
 *
 * <p>Cases run one at a time on a single worker thread, so the deadline is a plain static. The
 * time check is cooperative (conditions and the result sink call {@link #checkTime()}); {@link
 * Main} additionally kills the worker thread if a case overruns the deadline by a grace period.
 */
final class Limits {

    static final int DEFAULT_MAX_RESULTS = 20_000;
    static final long DEFAULT_MAX_MILLIS = 10_000L;

    static volatile int MAX_RESULTS = DEFAULT_MAX_RESULTS;
    static volatile long MAX_MILLIS = DEFAULT_MAX_MILLIS;

    private static volatile long deadlineNanos = Long.MAX_VALUE;
    private static volatile boolean armed = false;

    private Limits() {}

    /**
     * Reads the limits from the system properties and the environment (called once by {@link
     * Main}, before it reads its own options).
     *
     * @throws IllegalArgumentException when a setting is not a positive integer
     */
    static void configure() {
        setMaxResults(setting("harness.maxMatches", "FRAUDCEP_DIFF_MAX_MATCHES", DEFAULT_MAX_RESULTS));
        setMaxMillis(setting("harness.timeoutMs", "FRAUDCEP_DIFF_TIMEOUT_MS", DEFAULT_MAX_MILLIS));
    }

    /** A positive limit from a system property, else an environment variable, else the default. */
    static long setting(String property, String environment, long dflt) {
        String text = System.getProperty(property);
        String from = "system property " + property;
        if (text == null) {
            text = System.getenv(environment);
            from = "environment variable " + environment;
        }
        return text == null || text.isBlank() ? dflt : parse(text, from);
    }

    /** A positive integer limit, or an {@link IllegalArgumentException} naming where it came from. */
    static long parse(String text, String from) {
        long value;
        try {
            value = Long.parseLong(text.strip());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(from + " must be a positive integer, got " + text);
        }
        if (value <= 0) {
            throw new IllegalArgumentException(from + " must be a positive integer, got " + text);
        }
        return value;
    }

    static void setMaxResults(long value) {
        MAX_RESULTS = (int) Math.min(value, Integer.MAX_VALUE);
    }

    static void setMaxMillis(long value) {
        MAX_MILLIS = Math.min(value, 1_000_000_000L); // keeps the deadline arithmetic in range
    }

    static void startCase() {
        deadlineNanos = System.nanoTime() + MAX_MILLIS * 1_000_000L;
        armed = true;
    }

    static void endCase() {
        armed = false;
    }

    static void checkTime() {
        if (armed && System.nanoTime() - deadlineNanos > 0) {
            throw new LimitExceededException("case took more than " + MAX_MILLIS + " ms");
        }
    }

    /** Thrown (from inside Flink callbacks) when a case exceeds a limit. */
    static final class LimitExceededException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        LimitExceededException(String message) {
            super(message);
        }
    }
}
