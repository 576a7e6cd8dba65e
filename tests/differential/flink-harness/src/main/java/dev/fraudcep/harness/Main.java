package dev.fraudcep.harness;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.FileInputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Entry point: reads JSON Lines cases (from the file named by the argument, or stdin when there
 * is none or it is "-") and writes one JSON Lines result per case to stdout, in order.
 *
 * <p>Usage: {@code java -jar flink-cep-harness.jar [--max-matches=N] [--timeout-ms=MS]
 * [cases.jsonl | -]}. The options override the limits of {@link Limits}.
 *
 * <p>Cases run one at a time on a worker thread. A case that overruns the time limit is normally
 * stopped cooperatively by {@link Limits}; if it does not stop within a grace period (e.g. a
 * pattern without conditions stuck in Flink's NFA), the worker thread is killed and replaced.
 */
public final class Main {

    private static final long GRACE_MILLIS = 5_000L;

    private Main() {}

    public static void main(String[] args) throws Exception {
        // Results go to the real stdout; anything else that prints to System.out goes to stderr.
        BufferedWriter out =
                new BufferedWriter(
                        new OutputStreamWriter(
                                new FileOutputStream(FileDescriptor.out), StandardCharsets.UTF_8),
                        1 << 16);
        System.setOut(new PrintStream(new FileOutputStream(FileDescriptor.err), true));

        String input = null;
        try {
            Limits.configure();
            for (String arg : args) {
                if (arg.startsWith("--max-matches=")) {
                    Limits.setMaxResults(Limits.parse(arg.substring(14), "--max-matches"));
                } else if (arg.startsWith("--timeout-ms=")) {
                    Limits.setMaxMillis(Limits.parse(arg.substring(13), "--timeout-ms"));
                } else if (arg.startsWith("--") || input != null) {
                    throw new IllegalArgumentException("unexpected argument: " + arg);
                } else {
                    input = arg;
                }
            }
        } catch (IllegalArgumentException e) {
            System.err.println("flink-cep-harness: " + e.getMessage());
            System.err.println(
                    "usage: java -jar flink-cep-harness.jar [--max-matches=N] [--timeout-ms=MS]"
                            + " [cases.jsonl | -]");
            System.exit(2);
            return;
        }
        InputStream in =
                (input == null || input.equals("-")) ? System.in : new FileInputStream(input);
        ObjectMapper mapper = new ObjectMapper();

        ExecutorService worker = newWorker();
        final Thread[] workerThread = new Thread[1];

        try (BufferedReader reader =
                new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            String line;
            int lineNo = 0;
            while ((line = reader.readLine()) != null) {
                lineNo++;
                if (line.isBlank()) {
                    continue;
                }
                JsonNode c;
                try {
                    c = mapper.readTree(line);
                } catch (Exception e) {
                    c = null;
                }
                ObjectNode result;
                if (c == null || !c.isObject()) {
                    result =
                            CaseRunner.result(
                                    null,
                                    "CaseFormatException: line " + lineNo + " is not a JSON object",
                                    null,
                                    null);
                } else {
                    final JsonNode theCase = c;
                    Future<ObjectNode> f =
                            worker.submit(
                                    () -> {
                                        workerThread[0] = Thread.currentThread();
                                        return CaseRunner.run(theCase);
                                    });
                    try {
                        result = f.get(Limits.MAX_MILLIS + GRACE_MILLIS, TimeUnit.MILLISECONDS);
                    } catch (TimeoutException te) {
                        result =
                                CaseRunner.result(
                                        c.get("id"),
                                        "limit: case took more than "
                                                + Limits.MAX_MILLIS
                                                + " ms (worker killed)",
                                        null,
                                        null);
                        killWorker(worker, workerThread[0]);
                        worker = newWorker();
                    } catch (ExecutionException ee) {
                        Throwable t = ee.getCause();
                        String msg =
                                (t instanceof OutOfMemoryError || t instanceof StackOverflowError)
                                        ? "limit: " + CaseRunner.describe(t)
                                        : "runtime " + CaseRunner.describe(CaseRunner.rootCause(t));
                        result = CaseRunner.result(c.get("id"), msg, null, null);
                    }
                }
                out.write(mapper.writeValueAsString(result));
                out.write('\n');
                out.flush();
            }
        } finally {
            out.flush();
            worker.shutdownNow();
        }
        System.exit(0);
    }

    private static ExecutorService newWorker() {
        return Executors.newSingleThreadExecutor(
                r -> {
                    Thread t = new Thread(r, "cep-case-worker");
                    t.setDaemon(true);
                    return t;
                });
    }

    @SuppressWarnings({"deprecation", "removal"})
    private static void killWorker(ExecutorService worker, Thread t) {
        worker.shutdownNow();
        if (t != null) {
            try {
                t.stop(); // still functional on Java 17; last resort for a stuck case
            } catch (UnsupportedOperationException ignored) {
                // newer JDKs: the daemon thread is abandoned instead
            }
        }
    }
}
