// Test helper: leaves a transaction open on one partition that no
// transaction coordinator knows of, which is what a hanging transaction is.
// No Kafka client does this on purpose, so it speaks the wire protocol: it
// turns partition verification off (a cluster-wide dynamic setting; the
// broker would otherwise ask the coordinator, which would refuse), then
// sends one Produce request whose batch is transactional, from a producer id
// no coordinator gave out, with no AddPartitionsToTxn before it.
//
//   java -cp 'KAFKA_LIBS/*' OrphanTransaction.java HOST:PORT TOPIC PARTITION
//
// Only for a test's own broker: it leaves verification off there.
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.common.compress.Compression;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.message.ProduceRequestData;
import org.apache.kafka.common.protocol.ApiKeys;
import org.apache.kafka.common.protocol.ByteBufferAccessor;
import org.apache.kafka.common.record.internal.MemoryRecords;
import org.apache.kafka.common.record.internal.SimpleRecord;
import org.apache.kafka.common.requests.ProduceRequest;
import org.apache.kafka.common.requests.ProduceResponse;
import org.apache.kafka.common.requests.RequestHeader;
import org.apache.kafka.common.requests.ResponseHeader;

public final class OrphanTransaction {
    private static final long ORPHAN_PRODUCER_ID = 987_654_321L;
    private static final short PRODUCE_VERSION = 9;

    public static void main(String[] args) throws Exception {
        String broker = args[0];
        String topic = args[1];
        int partition = Integer.parseInt(args[2]);
        turnVerificationOff(broker);
        ProduceRequestData data = new ProduceRequestData().setAcks((short) -1).setTimeoutMs(10_000)
            .setTransactionalId("d2c-orphan-transaction");
        MemoryRecords records = MemoryRecords.withTransactionalRecords(Compression.NONE, ORPHAN_PRODUCER_ID,
            (short) 0, 0, new SimpleRecord(System.currentTimeMillis(), "orphan".getBytes(StandardCharsets.UTF_8),
                "never committed".getBytes(StandardCharsets.UTF_8)));
        ProduceRequestData.TopicProduceDataCollection topics = new ProduceRequestData.TopicProduceDataCollection();
        topics.add(new ProduceRequestData.TopicProduceData().setName(topic).setPartitionData(List.of(
            new ProduceRequestData.PartitionProduceData().setIndex(partition).setRecords(records))));
        data.setTopicData(topics);
        ProduceRequest request = new ProduceRequest.Builder(PRODUCE_VERSION, PRODUCE_VERSION, data)
            .build(PRODUCE_VERSION);
        RequestHeader header = new RequestHeader(ApiKeys.PRODUCE, PRODUCE_VERSION, "d2c-orphan-transaction", 1);
        int colon = broker.lastIndexOf(':');
        try (Socket socket = new Socket(broker.substring(0, colon), Integer.parseInt(broker.substring(colon + 1)))) {
            ByteBuffer body = request.serializeWithHeader(header);
            DataOutputStream out = new DataOutputStream(socket.getOutputStream());
            out.writeInt(body.remaining());
            out.write(body.array(), body.arrayOffset() + body.position(), body.remaining());
            out.flush();
            DataInputStream in = new DataInputStream(socket.getInputStream());
            byte[] reply = new byte[in.readInt()];
            in.readFully(reply);
            ByteBuffer buffer = ByteBuffer.wrap(reply);
            ResponseHeader.parse(buffer, ApiKeys.PRODUCE.responseHeaderVersion(PRODUCE_VERSION));
            ProduceResponse response = ProduceResponse.parse(new ByteBufferAccessor(buffer), PRODUCE_VERSION);
            Map<?, Integer> errors = response.errorCounts();
            System.out.println("produce: " + errors);
            if (errors.keySet().stream().anyMatch(error -> !error.toString().equals("NONE"))) {
                System.exit(1);
            }
        }
    }

    private static void turnVerificationOff(String broker) throws Exception {
        Properties properties = new Properties();
        properties.put("bootstrap.servers", broker);
        try (Admin admin = Admin.create(properties)) {
            ConfigResource cluster = new ConfigResource(ConfigResource.Type.BROKER, "");
            admin.incrementalAlterConfigs(Map.of(cluster, List.of(new AlterConfigOp(
                new ConfigEntry("transaction.partition.verification.enable", "false"),
                AlterConfigOp.OpType.SET)))).all().get();
        }
        // The dynamic setting reaches the broker through the metadata log.
        Thread.sleep(2_000);
    }
}
