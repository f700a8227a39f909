// The hanging-transaction sweeper: it finds Kafka transactions that a
// partition holds open but that no transaction coordinator will ever close,
// and aborts them.
//
// Why it exists: a hanging transaction pins the partition's last stable
// offset, so every read_committed consumer of it (every processor of the
// platform) stops there for good, and Kafka never ends it by itself. We saw
// one after a broker's kill -9 with `transaction.partition.verification.enable`
// on (librdkafka speaks transaction protocol v1, where KIP-890's epoch bump
// per transaction does not apply). librdkafka has none of the admin calls
// needed (DescribeProducers, ListTransactions, DescribeTransactions,
// WriteTxnMarkers); Kafka's Java Admin has them all, so this runs on the JVM
// with the jars of the Kafka distribution (`java -cp 'libs/*' THIS_FILE`).
//
// Delivery rule: it writes nothing but abort markers, and only for an open
// transaction that
//   1. the partition's leader reports open (DescribeProducers),
//   2. has taken no write for D2C_SWEEPER_MIN_AGE_MS (longer than any
//      transaction timeout of ours: the coordinator ends a live one first),
//   3. the producer's coordinator does not list that partition in any
//      transaction it will still complete: no transactional id for the
//      producer id, or one whose transaction does not hold the partition,
//   4. and is still open at the same start offset when looked at again just
//      before the abort.
// That is Kafka's own definition (KIP-664, `kafka-transactions.sh
// find-hanging`). The records of an aborted hanging transaction are
// discarded: no coordinator would ever have committed them.
//
// Configuration (environment, each printed at start):
//   D2C_KAFKA_BROKERS               bootstrap servers (127.0.0.1:9092)
//   D2C_KAFKA_CLIENT_PROPERTIES     a Java client properties file for a secured
//                                   cluster (security.protocol, sasl.*, ssl.*);
//                                   its keys are printed, never its values
//   D2C_ADMIN_ADDR                  /metrics and /ready (127.0.0.1:9107)
//   D2C_SWEEPER_INTERVAL_MS         time between sweeps (15000)
//   D2C_SWEEPER_MIN_AGE_MS          rule 2 (60000)
//   D2C_SWEEPER_ABORT               false: find and report, abort nothing (true)
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.admin.AbortTransactionSpec;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.ListTransactionsOptions;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TransactionalIdNotFoundException;

public final class HangingTransactions {
    private static final Set<String> SWEEPER_KEYS = Set.of(
        "D2C_SWEEPER_INTERVAL_MS", "D2C_SWEEPER_MIN_AGE_MS", "D2C_SWEEPER_ABORT");
    private static final long REQUEST_TIMEOUT_MS = 30_000;

    record Config(String brokers, String clientProperties, String adminAddr,
                  long intervalMs, long minAgeMs, boolean abort) {
        static Config fromEnv(Map<String, String> env) {
            for (String key : env.keySet()) {
                if (key.startsWith("D2C_SWEEPER_") && !SWEEPER_KEYS.contains(key)) {
                    throw new IllegalArgumentException("unknown setting " + key
                        + " (known: " + String.join(", ", new TreeSet<>(SWEEPER_KEYS)) + ")");
                }
            }
            return new Config(
                env.getOrDefault("D2C_KAFKA_BROKERS", "127.0.0.1:9092"),
                env.getOrDefault("D2C_KAFKA_CLIENT_PROPERTIES", ""),
                env.getOrDefault("D2C_ADMIN_ADDR", "127.0.0.1:9107"),
                positive(env, "D2C_SWEEPER_INTERVAL_MS", 15_000),
                positive(env, "D2C_SWEEPER_MIN_AGE_MS", 60_000),
                bool(env, "D2C_SWEEPER_ABORT", true));
        }

        private static long positive(Map<String, String> env, String key, long fallback) {
            String text = env.get(key);
            if (text == null) {
                return fallback;
            }
            try {
                long value = Long.parseLong(text.trim());
                if (value > 0) {
                    return value;
                }
            } catch (NumberFormatException ignored) {
                // reported below with the key's name
            }
            throw new IllegalArgumentException(key + "=" + text + ": a whole number of milliseconds above 0");
        }

        private static boolean bool(Map<String, String> env, String key, boolean fallback) {
            String text = env.get(key);
            if (text == null) {
                return fallback;
            }
            return switch (text.trim().toLowerCase()) {
                case "true", "1", "yes" -> true;
                case "false", "0", "no" -> false;
                default -> throw new IllegalArgumentException(key + "=" + text + ": true or false");
            };
        }
    }

    /** An open transaction on one partition, as its leader reports it. */
    record Open(TopicPartition partition, ProducerState producer, long ageMs) {
        long startOffset() {
            return producer.currentTransactionStartOffset().orElse(-1);
        }

        @Override
        public String toString() {
            return partition + " producer " + producer.producerId() + " epoch " + producer.producerEpoch()
                + " from offset " + startOffset() + ", last write " + ageMs / 1000 + " s ago";
        }
    }

    /** What the last sweep saw, for /metrics. */
    static final class Metrics {
        final AtomicLong sweepsOk = new AtomicLong();
        final AtomicLong sweepsFailed = new AtomicLong();
        final AtomicLong lastSweepEpochMs = new AtomicLong();
        final AtomicLong aborted = new AtomicLong();
        final AtomicLong abortFailures = new AtomicLong();
        volatile List<Open> open = List.of();
        volatile List<Open> hanging = List.of();

        String exposition() {
            StringBuilder out = new StringBuilder();
            out.append("# HELP d2c_sweeper_sweeps_total Sweeps for hanging transactions, by outcome.\n")
                .append("# TYPE d2c_sweeper_sweeps_total counter\n")
                .append("d2c_sweeper_sweeps_total{outcome=\"ok\"} ").append(sweepsOk.get()).append('\n')
                .append("d2c_sweeper_sweeps_total{outcome=\"failed\"} ").append(sweepsFailed.get()).append('\n');
            out.append("# HELP d2c_sweeper_last_sweep_timestamp_seconds When the last sweep that completed ended.\n")
                .append("# TYPE d2c_sweeper_last_sweep_timestamp_seconds gauge\n")
                .append("d2c_sweeper_last_sweep_timestamp_seconds ").append(lastSweepEpochMs.get() / 1000.0).append('\n');
            out.append("# HELP d2c_sweeper_open_transaction_age_seconds Per partition with an open transaction: "
                    + "time since the oldest one's last write (its last stable offset is held that long).\n")
                .append("# TYPE d2c_sweeper_open_transaction_age_seconds gauge\n");
            Map<TopicPartition, Long> oldest = new HashMap<>();
            for (Open transaction : open) {
                oldest.merge(transaction.partition(), transaction.ageMs(), Math::max);
            }
            oldest.forEach((partition, ageMs) -> out.append("d2c_sweeper_open_transaction_age_seconds{topic=\"")
                .append(partition.topic()).append("\",partition=\"").append(partition.partition()).append("\"} ")
                .append(ageMs / 1000.0).append('\n'));
            out.append("# HELP d2c_sweeper_hanging_transactions Hanging transactions the last sweep found "
                    + "and did not abort.\n")
                .append("# TYPE d2c_sweeper_hanging_transactions gauge\n")
                .append("d2c_sweeper_hanging_transactions ").append(hanging.size()).append('\n');
            out.append("# HELP d2c_sweeper_aborted_transactions_total Hanging transactions aborted "
                    + "(which partitions: the sweeper's log).\n")
                .append("# TYPE d2c_sweeper_aborted_transactions_total counter\n")
                .append("d2c_sweeper_aborted_transactions_total ").append(aborted.get()).append('\n');
            out.append("# HELP d2c_sweeper_abort_failures_total Aborts the broker refused or did not answer.\n")
                .append("# TYPE d2c_sweeper_abort_failures_total counter\n")
                .append("d2c_sweeper_abort_failures_total ").append(abortFailures.get()).append('\n');
            return out.toString();
        }
    }

    private final Admin admin;
    private final Config config;
    private final Metrics metrics;

    HangingTransactions(Admin admin, Config config, Metrics metrics) {
        this.admin = admin;
        this.config = config;
        this.metrics = metrics;
    }

    public static void main(String[] args) throws Exception {
        Config config;
        Properties properties;
        try {
            config = Config.fromEnv(System.getenv());
            properties = clientProperties(config);
        } catch (IllegalArgumentException | IOException error) {
            System.err.println("hanging-transactions: " + error.getMessage());
            System.exit(2);
            return;
        }
        System.err.printf("hanging-transactions: brokers=%s client properties=%s (keys: %s) admin=%s "
                + "interval=%d ms min age=%d ms abort=%s%n",
            config.brokers(), config.clientProperties().isEmpty() ? "none" : config.clientProperties(),
            new TreeSet<>(properties.stringPropertyNames()), config.adminAddr(),
            config.intervalMs(), config.minAgeMs(), config.abort());
        Metrics metrics = new Metrics();
        serveMetrics(config.adminAddr(), metrics);
        try (Admin admin = Admin.create(properties)) {
            HangingTransactions sweeper = new HangingTransactions(admin, config, metrics);
            while (true) {
                sweeper.sweepOnce();
                Thread.sleep(config.intervalMs());
            }
        }
    }

    static Properties clientProperties(Config config) throws IOException {
        Properties properties = new Properties();
        if (!config.clientProperties().isEmpty()) {
            try (InputStream in = new FileInputStream(config.clientProperties())) {
                properties.load(in);
            }
        }
        properties.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, config.brokers());
        properties.putIfAbsent(AdminClientConfig.CLIENT_ID_CONFIG, "d2c-hanging-transactions");
        properties.putIfAbsent(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(REQUEST_TIMEOUT_MS));
        return properties;
    }

    static void serveMetrics(String addr, Metrics metrics) throws IOException {
        int colon = addr.lastIndexOf(':');
        HttpServer server = HttpServer.create(
            new InetSocketAddress(addr.substring(0, colon), Integer.parseInt(addr.substring(colon + 1))), 16);
        server.createContext("/metrics", exchange -> {
            exchange.getResponseHeaders().set("Content-Type", "text/plain; version=0.0.4");
            respond(exchange, 200, metrics.exposition());
        });
        server.createContext("/health", exchange -> respond(exchange, 200, "ok\n"));
        // Ready once a sweep has gone through: the broker answers and the
        // credentials are good.
        server.createContext("/ready", exchange -> {
            boolean ready = metrics.sweepsOk.get() > 0;
            respond(exchange, ready ? 200 : 503, ready ? "ready\n" : "no sweep has completed yet\n");
        });
        server.start();
        // Callers that asked for port 0 learn the real one from stdout.
        System.out.println("ADMIN_LISTENING " + addr.substring(0, colon) + ":" + server.getAddress().getPort());
    }

    private static void respond(HttpExchange exchange, int status, String text) throws IOException {
        byte[] body = text.getBytes(StandardCharsets.UTF_8);
        exchange.sendResponseHeaders(status, body.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(body);
        }
    }

    void sweepOnce() {
        try {
            List<Open> open = openTransactions();
            List<Open> hanging = hanging(open);
            List<Open> left = new ArrayList<>();
            for (Open transaction : hanging) {
                if (!config.abort() || !abort(transaction)) {
                    left.add(transaction);
                }
            }
            metrics.open = open;
            metrics.hanging = left;
            metrics.sweepsOk.incrementAndGet();
            metrics.lastSweepEpochMs.set(System.currentTimeMillis());
        } catch (ExecutionException | RuntimeException error) {
            metrics.sweepsFailed.incrementAndGet();
            System.err.println("hanging-transactions: sweep failed: " + rootMessage(error));
        } catch (InterruptedException error) {
            Thread.currentThread().interrupt();
        }
    }

    /** Rule 1, every partition of every topic, internal ones included: a
     *  hanging transaction on __consumer_offsets stops a group's offset fetch. */
    List<Open> openTransactions() throws ExecutionException, InterruptedException {
        Set<String> topics = admin.listTopics(new ListTopicsOptions().listInternal(true)).names().get();
        List<TopicPartition> partitions = new ArrayList<>();
        for (TopicDescription description : admin.describeTopics(topics).allTopicNames().get().values()) {
            description.partitions().forEach(info ->
                partitions.add(new TopicPartition(description.name(), info.partition())));
        }
        long now = System.currentTimeMillis();
        List<Open> open = new ArrayList<>();
        admin.describeProducers(partitions).all().get().forEach((partition, state) -> {
            for (ProducerState producer : state.activeProducers()) {
                if (producer.currentTransactionStartOffset().isPresent()) {
                    open.add(new Open(partition, producer, now - producer.lastTimestamp()));
                }
            }
        });
        return open;
    }

    /** Rules 2 and 3. */
    List<Open> hanging(List<Open> open) throws ExecutionException, InterruptedException {
        List<Open> old = open.stream().filter(transaction -> transaction.ageMs() > config.minAgeMs()).toList();
        if (old.isEmpty()) {
            return List.of();
        }
        Set<Long> producerIds = new HashSet<>();
        old.forEach(transaction -> producerIds.add(transaction.producer().producerId()));
        Map<Long, String> transactionalIds = new HashMap<>();
        Collection<TransactionListing> listings = admin
            .listTransactions(new ListTransactionsOptions().filterProducerIds(producerIds)).all().get();
        for (TransactionListing listing : listings) {
            if (producerIds.contains(listing.producerId())) {
                transactionalIds.put(listing.producerId(), listing.transactionalId());
            }
        }
        Map<String, TransactionDescription> descriptions = describe(new HashSet<>(transactionalIds.values()));
        List<Open> hanging = new ArrayList<>();
        for (Open transaction : old) {
            String transactionalId = transactionalIds.get(transaction.producer().producerId());
            TransactionDescription description = transactionalId == null ? null : descriptions.get(transactionalId);
            if (description == null || !description.topicPartitions().contains(transaction.partition())) {
                System.err.printf("hanging-transactions: hanging: %s (transactional id %s, coordinator: %s)%n",
                    transaction, transactionalId == null ? "none" : transactionalId,
                    description == null ? "no transaction" : description.state() + " on "
                        + description.topicPartitions());
                hanging.add(transaction);
            }
        }
        return hanging;
    }

    private Map<String, TransactionDescription> describe(Set<String> transactionalIds)
            throws ExecutionException, InterruptedException {
        Map<String, TransactionDescription> descriptions = new HashMap<>();
        if (transactionalIds.isEmpty()) {
            return descriptions;
        }
        var result = admin.describeTransactions(transactionalIds);
        for (String transactionalId : transactionalIds) {
            try {
                descriptions.put(transactionalId, result.description(transactionalId).get());
            } catch (ExecutionException error) {
                if (!(error.getCause() instanceof TransactionalIdNotFoundException)) {
                    throw error;
                }
            }
        }
        return descriptions;
    }

    /** Rule 4, then the abort marker. True when the transaction is closed. */
    boolean abort(Open transaction) throws InterruptedException {
        try {
            boolean stillOpen = admin.describeProducers(List.of(transaction.partition()))
                .partitionResult(transaction.partition()).get().activeProducers().stream()
                .anyMatch(producer -> producer.producerId() == transaction.producer().producerId()
                    && producer.currentTransactionStartOffset().orElse(-1) == transaction.startOffset());
            if (!stillOpen) {
                System.err.printf("hanging-transactions: closed by its coordinator meanwhile: %s%n", transaction);
                return true;
            }
            // A transaction begun by a new producer id and never completed has
            // no coordinator epoch (-1); 0 is at most any real one.
            int coordinatorEpoch = Math.max(0, transaction.producer().coordinatorEpoch().orElse(0));
            admin.abortTransaction(new AbortTransactionSpec(transaction.partition(),
                    transaction.producer().producerId(), (short) transaction.producer().producerEpoch(),
                    coordinatorEpoch))
                .all().get(REQUEST_TIMEOUT_MS, TimeUnit.MILLISECONDS);
            metrics.aborted.incrementAndGet();
            System.err.printf("hanging-transactions: aborted: %s%n", transaction);
            return true;
        } catch (ExecutionException | java.util.concurrent.TimeoutException error) {
            metrics.abortFailures.incrementAndGet();
            System.err.printf("hanging-transactions: could not abort %s: %s%n", transaction, rootMessage(error));
            return false;
        }
    }

    private static String rootMessage(Throwable error) {
        Throwable cause = error;
        while (cause.getCause() != null) {
            cause = cause.getCause();
        }
        return cause.getClass().getSimpleName() + ": " + cause.getMessage();
    }
}
