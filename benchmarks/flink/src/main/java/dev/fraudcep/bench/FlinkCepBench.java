package dev.fraudcep.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.cep.CEP;
import org.apache.flink.cep.functions.PatternProcessFunction;
import org.apache.flink.cep.nfa.aftermatch.AfterMatchSkipStrategy;
import org.apache.flink.cep.pattern.Pattern;
import org.apache.flink.cep.pattern.conditions.IterativeCondition;
import org.apache.flink.cep.pattern.conditions.SimpleCondition;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.DataStreamUtils;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.Collector;

import java.io.BufferedReader;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Throughput of Apache Flink CEP on fraudcep's benchmark workloads P1 to P4
 * (benchmarks/workloads.py; P4 on its own, match-dense stream), each run as a real DataStream job in a local MiniCluster at
 * parallelism 1, in event time, keyed by user_id.
 *
 * <p>Usage: {@code java -jar target/flink-cep-bench.jar --input payments.jsonl
 * [--workloads P1,P2,P3] [--runs 3] [--warmup 1] [--chain]}
 *
 * <p>The payments are parsed before any job starts and replayed from memory by a
 * {@link DataGeneratorSource} whose generator indexes a static array (the local environment
 * runs the job in this JVM). The timed interval of a job starts when the source hands out
 * its first payment and ends when the CEP operator's process function is closed, i.e. after
 * the last payment and the final watermark have been processed and every match emitted.
 * Job submission, deployment and tear-down are outside it. See README.md.
 */
public final class FlinkCepBench {

    /** A payment, as benchmarks/workloads.py generates it. A Flink POJO. */
    public static final class Payment {
        public long paymentId;
        public int userId;
        public double amount;
        public String country;
        public long ts;

        public Payment() {}

        @Override
        public String toString() {
            return "Payment{" + paymentId + ", user " + userId + ", " + amount + ", " + country
                    + ", " + ts + "}";
        }
    }

    // --- shared between the job (running in this JVM's MiniCluster) and main ---------------

    /** The preloaded stream; the source indexes it. */
    static volatile Payment[] events;

    static volatile long firstNanos;
    static volatile long endNanos;
    static volatile long processCpuAtFirst;
    static volatile long processCpuAtEnd;
    static volatile long cepThreadCpu;
    static volatile long sourceThreadCpuAtFirst;
    static volatile long sourceThreadCpu;
    static volatile long machineBusyAtFirst;
    static volatile long machineBusyAtEnd;
    static final AtomicLong MATCHES = new AtomicLong();

    private static final com.sun.management.OperatingSystemMXBean OS =
            (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
    private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();

    /**
     * CPU time all processes of the machine have used since boot (Linux /proc/stat, in ticks
     * of 10 ms), or -1 where it cannot be read: the benchmark reports how much of the machine
     * other work took while it ran.
     */
    static long machineBusyNanos() {
        try {
            String[] f = Files.readAllLines(Path.of("/proc/stat")).get(0).trim().split("\\s+");
            // cpu user nice system idle iowait irq softirq steal ...
            long busy = 0;
            for (int i : new int[] {1, 2, 3, 6, 7, 8}) {
                busy += Long.parseLong(f[i]);
            }
            return busy * 10_000_000L;
        } catch (Exception e) {
            return -1;
        }
    }

    // --- the job's functions -----------------------------------------------------------------

    /** Hands out the preloaded payments in order; stamps the start of the timed interval. */
    static final class Replay implements GeneratorFunction<Long, Payment> {
        @Override
        public Payment map(Long index) {
            Payment[] all = events;
            int i = (int) (long) index;
            if (i == 0) {
                firstNanos = System.nanoTime();
                processCpuAtFirst = OS.getProcessCpuTime();
                machineBusyAtFirst = machineBusyNanos();
                sourceThreadCpuAtFirst = THREADS.getCurrentThreadCpuTime();
            }
            if (i == all.length - 1) {
                sourceThreadCpu = THREADS.getCurrentThreadCpuTime() - sourceThreadCpuAtFirst;
            }
            return all[i];
        }
    }

    static final class UserKey implements KeySelector<Payment, Integer> {
        @Override
        public Integer getKey(Payment p) {
            return p.userId;
        }
    }

    /** Counts matches; its close() ends the timed interval. */
    static final class CountMatches extends PatternProcessFunction<Payment, Long> {
        private long count;
        private long threadCpuAtOpen;

        @Override
        public void open(OpenContext openContext) {
            count = 0;
            threadCpuAtOpen = THREADS.getCurrentThreadCpuTime();
        }

        @Override
        public void processMatch(Map<String, List<Payment>> match, Context ctx, Collector<Long> out) {
            count++;
            out.collect(count);
        }

        @Override
        public void close() {
            endNanos = System.nanoTime();
            processCpuAtEnd = OS.getProcessCpuTime();
            machineBusyAtEnd = machineBusyNanos();
            cepThreadCpu = THREADS.getCurrentThreadCpuTime() - threadCpuAtOpen;
            MATCHES.addAndGet(count);
        }
    }

    // --- the three rules of benchmarks/workloads.py -------------------------------------------

    static final class AmountOver extends SimpleCondition<Payment> {
        private final double limit;

        AmountOver(double limit) {
            this.limit = limit;
        }

        @Override
        public boolean filter(Payment p) {
            return p.amount > limit;
        }
    }

    static final class AmountUnder extends SimpleCondition<Payment> {
        private final double limit;

        AmountUnder(double limit) {
            this.limit = limit;
        }

        @Override
        public boolean filter(Payment p) {
            return p.amount < limit;
        }
    }

    /** P2's b: over 1500, from another country than the first "a" event. */
    static final class OtherCountryOver1500 extends IterativeCondition<Payment> {
        @Override
        public boolean filter(Payment p, Context<Payment> ctx) throws Exception {
            return p.amount > 1500
                    && !p.country.equals(ctx.getEventsForPattern("a").iterator().next().country);
        }
    }

    /** P4's b: over 2000, from another country than the first "a" event. */
    static final class OtherCountryOver2000 extends IterativeCondition<Payment> {
        @Override
        public boolean filter(Payment p, Context<Payment> ctx) throws Exception {
            return p.amount > 2000
                    && !p.country.equals(ctx.getEventsForPattern("a").iterator().next().country);
        }
    }

    /** P1: three payments over 2000 by one user within five minutes. */
    static Pattern<Payment, ?> p1() {
        return Pattern.<Payment>begin("first", AfterMatchSkipStrategy.noSkip())
                .where(new AmountOver(2000))
                .times(3)
                .within(Duration.ofMinutes(5));
    }

    /** P2: two payments over 1500 from different countries within ten minutes. */
    static Pattern<Payment, ?> p2() {
        return Pattern.<Payment>begin("a", AfterMatchSkipStrategy.noSkip())
                .where(new AmountOver(1500))
                .followedBy("b")
                .where(new OtherCountryOver1500())
                .within(Duration.ofMinutes(10));
    }

    /** P3: over 1900, then over 1900 again with no payment under 10 between, in five minutes. */
    static Pattern<Payment, ?> p3() {
        return Pattern.<Payment>begin("a", AfterMatchSkipStrategy.noSkip())
                .where(new AmountOver(1900))
                .notFollowedBy("b")
                .where(new AmountUnder(10))
                .followedBy("c")
                .where(new AmountOver(1900))
                .within(Duration.ofMinutes(5));
    }

    /** P4 (match-dense, on the dense stream): two payments over 2000 from different countries
     * within ten minutes. */
    static Pattern<Payment, ?> p4() {
        return Pattern.<Payment>begin("a", AfterMatchSkipStrategy.noSkip())
                .where(new AmountOver(2000))
                .followedBy("b")
                .where(new OtherCountryOver2000())
                .within(Duration.ofMinutes(10));
    }

    static Pattern<Payment, ?> pattern(String workload) {
        switch (workload) {
            case "P1":
                return p1();
            case "P2":
                return p2();
            case "P3":
                return p3();
            case "P4":
                return p4();
            default:
                throw new IllegalArgumentException("unknown workload " + workload);
        }
    }

    // --- one job --------------------------------------------------------------------------------

    record Run(double eventsPerSecond, long matches, double seconds, double jobSeconds,
               double cepCpuSeconds, double sourceCpuSeconds, double processCpuSeconds,
               double machineCpuSeconds) {}

    static Run runOnce(String workload, boolean chain) throws Exception {
        int n = events.length;
        firstNanos = 0;
        endNanos = 0;
        sourceThreadCpu = 0;
        MATCHES.set(0);

        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(1);
        WatermarkStrategy<Payment> watermarks = WatermarkStrategy
                .<Payment>forBoundedOutOfOrderness(Duration.ZERO)
                .withTimestampAssigner((p, previous) -> p.ts);
        DataGeneratorSource<Payment> source = new DataGeneratorSource<>(
                new Replay(), n, RateLimiterStrategy.noOp(), TypeInformation.of(Payment.class));
        DataStream<Payment> payments = env.fromSource(source, watermarks, "payments");

        KeyedStream<Payment, Integer> byUser = chain
                // the stream is already "partitioned" (one partition), so the key is only
                // declared: source and CEP operator chain into one task, one thread
                ? DataStreamUtils.reinterpretAsKeyedStream(payments, new UserKey(), Types.INT)
                // the usual keyBy: a hash exchange between a source task and a CEP task
                : payments.keyBy(new UserKey(), Types.INT);

        CEP.pattern(byUser, pattern(workload))
                .process(new CountMatches(), Types.LONG)
                .name("cep-" + workload)
                .sinkTo(new DiscardingSink<>());

        long submitted = System.nanoTime();
        env.execute("fraudcep-bench-" + workload);
        long finished = System.nanoTime();

        if (firstNanos == 0 || endNanos == 0) {
            throw new IllegalStateException("the job did not record its timed interval");
        }
        double seconds = (endNanos - firstNanos) / 1e9;
        return new Run(n / seconds, MATCHES.get(), seconds, (finished - submitted) / 1e9,
                cepThreadCpu / 1e9, sourceThreadCpu / 1e9, (processCpuAtEnd - processCpuAtFirst) / 1e9,
                machineBusyAtFirst < 0 || machineBusyAtEnd < 0
                        ? Double.NaN : (machineBusyAtEnd - machineBusyAtFirst) / 1e9);
    }

    // --- input ----------------------------------------------------------------------------------

    static Payment[] load(Path file) throws Exception {
        ObjectMapper json = new ObjectMapper();
        List<Payment> out = new ArrayList<>();
        try (BufferedReader in = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isBlank()) {
                    continue;
                }
                JsonNode o = json.readTree(line);
                Payment p = new Payment();
                p.paymentId = o.get("payment_id").asLong();
                p.userId = o.get("user_id").asInt();
                p.amount = o.get("amount").asDouble();
                p.country = o.get("country").asText().intern();
                p.ts = o.get("ts").asLong();
                out.add(p);
            }
        }
        return out.toArray(new Payment[0]);
    }

    // --- main -----------------------------------------------------------------------------------

    public static void main(String[] args) throws Exception {
        Path input = null;
        List<String> workloads = List.of("P1", "P2", "P3");
        int runs = 3;
        int warmup = 1;
        boolean chain = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--input" -> input = Path.of(args[++i]);
                case "--workloads" -> workloads = Arrays.asList(args[++i].split(","));
                case "--runs" -> runs = Integer.parseInt(args[++i]);
                case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                case "--chain" -> chain = true;
                default -> {
                    System.err.println("usage: FlinkCepBench --input FILE [--workloads P1,P2,P3]"
                            + " [--runs 3] [--warmup 1] [--chain]");
                    System.exit(2);
                }
            }
        }
        if (input == null || runs < 1 || warmup < 0) {
            System.err.println("--input is required; --runs >= 1, --warmup >= 0");
            System.exit(2);
        }

        events = load(input);
        System.gc();

        for (String workload : workloads) {
            List<Run> timed = new ArrayList<>();
            List<Run> warm = new ArrayList<>();
            for (int i = 0; i < warmup + runs; i++) {
                Run r = runOnce(workload, chain);
                (i < warmup ? warm : timed).add(r);
                System.gc();
            }
            report(workload, chain, warm, timed);
        }
    }

    static void report(String workload, boolean chain, List<Run> warm, List<Run> timed) {
        double[] rates = timed.stream().mapToDouble(Run::eventsPerSecond).sorted().toArray();
        double best = rates[rates.length - 1];
        double median = rates.length % 2 == 1
                ? rates[rates.length / 2]
                : (rates[rates.length / 2 - 1] + rates[rates.length / 2]) / 2;
        long matches = timed.get(0).matches();
        boolean consistent = true;
        for (Run r : warm) consistent &= r.matches() == matches;
        for (Run r : timed) consistent &= r.matches() == matches;

        int n = events.length;
        StringBuilder each = new StringBuilder();
        double taskCpu = Double.MAX_VALUE; // least CPU any timed run needed in the job's task threads
        double cepCpu = 0;
        double sourceCpu = 0;
        double cores = 0;
        double overhead = 0;
        double others = 0;
        for (Run r : timed) {
            if (each.length() > 0) each.append(' ');
            each.append(String.format(Locale.ROOT, "%,.0f", r.eventsPerSecond()));
            // chained: one task thread (the CEP thread also runs the source); keyBy: two
            double cpu = chain ? r.cepCpuSeconds() : r.cepCpuSeconds() + r.sourceCpuSeconds();
            if (cpu < taskCpu) {
                taskCpu = cpu;
                cepCpu = r.cepCpuSeconds();
                sourceCpu = r.sourceCpuSeconds();
            }
            cores += r.processCpuSeconds() / r.seconds() / timed.size();
            others = Math.max(others, // the most any run saw, to flag disturbed runs
                    Math.max(0, r.machineCpuSeconds() - r.processCpuSeconds()) / r.seconds());
            overhead += (r.jobSeconds() - r.seconds()) / timed.size();
        }
        String firstRun = warm.isEmpty() ? "" : String.format(Locale.ROOT,
                "; warm-up run %,.0f", warm.get(0).eventsPerSecond());
        System.out.println(String.format(Locale.ROOT,
                "%s %s: best %,.0f events/s, median %,.0f events/s, %d matches%s"
                        + "  [%,d events; runs %s%s; %,.0f events per CPU-second of task threads%s;"
                        + " JVM used %.2f cores, other processes up to %.2f cores;"
                        + " start/stop outside the interval %.1f s]",
                workload, chain ? "chained" : "keyBy", best, median, matches,
                consistent ? "" : " (MATCH COUNTS DIFFER BETWEEN RUNS)",
                n, each, firstRun, n / taskCpu,
                chain ? "" : String.format(Locale.ROOT, " (CEP task %.2f s, source task %.2f s)",
                        cepCpu, sourceCpu),
                cores, others, overhead));
        System.out.flush();
    }

    private FlinkCepBench() {}
}
