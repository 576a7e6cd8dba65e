package dev.fraudcep.harness;

/**
 * Per-case guards against runaway cases (too many results, too much time).
 *
 * <p>Cases run one at a time on a single worker thread, so the deadline is a plain static. The
 * time check is cooperative (conditions and the result sink call {@link #checkTime()}); {@link
 * Main} additionally kills the worker thread if a case overruns the deadline by a grace period.
 */
final class Limits {

    static final int MAX_RESULTS = Integer.getInteger("harness.maxMatches", 20000);
    static final long MAX_MILLIS = Long.getLong("harness.timeoutMs", 10_000L);

    private static volatile long deadlineNanos = Long.MAX_VALUE;
    private static volatile boolean armed = false;

    private Limits() {}

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
