import static java.nio.charset.StandardCharsets.UTF_8;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.FeatureUpdate;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.UpdateFeaturesOptions;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Kafka's own Java client runs bench.kafka_txn's in-log shape (three records on three partitions,
 * commit, wait until a read_committed consumer sees the first) with the cluster's
 * transaction.version set to the one asked for: 1, the protocol aiokafka speaks (AddPartitionsToTxn
 * before the first record of each partition), or 2, KIP-890's (partitions added by the produce
 * itself, the epoch bumped at each commit). Run by bench.kafka_txn_versions, which compiles it.
 *
 * <p>Argument: the bootstrap servers. Each line on stdin asks for one turn, "version cycles
 * warm-up" (one JVM for every turn, so its JIT warms once); each turn prints one JSON line: the
 * version, then every measured cycle's "committed" and "visible" milliseconds from its begin.
 * Zero cycles only sets the version.
 */
public final class TxnVersions {
  private TxnVersions() {}

  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    BufferedReader turns = new BufferedReader(new InputStreamReader(System.in, UTF_8));
    for (String turn = turns.readLine(); turn != null; turn = turns.readLine()) {
      String[] asked = turn.trim().split(" ");
      short version = Short.parseShort(asked[0]);
      int cycles = Integer.parseInt(asked[1]);
      int warmUp = Integer.parseInt(asked[2]);
      String topic = "txnv" + UUID.randomUUID().toString().substring(0, 8);
      setVersion(bootstrap, version, topic);
      List<Double> committed = new ArrayList<>();
      List<Double> visible = new ArrayList<>();
      if (cycles > 0) {
        run(bootstrap, topic, cycles, warmUp, committed, visible);
      }
      System.out.println("{\"transaction_version\": " + version + ", \"committed\": "
          + committed + ", \"visible\": " + visible + "}");
      System.out.flush();
    }
  }

  private static void setVersion(String bootstrap, short version, String topic) throws Exception {
    Properties adminProps = new Properties();
    adminProps.put("bootstrap.servers", bootstrap);
    try (Admin admin = Admin.create(adminProps)) {
      short finalized = admin.describeFeatures().featureMetadata().get().finalizedFeatures()
          .get("transaction.version").maxVersionLevel();
      if (finalized != version) {
        FeatureUpdate.UpgradeType how = version < finalized
            ? FeatureUpdate.UpgradeType.SAFE_DOWNGRADE : FeatureUpdate.UpgradeType.UPGRADE;
        admin.updateFeatures(Map.of("transaction.version", new FeatureUpdate(version, how)),
            new UpdateFeaturesOptions()).all().get();
        Thread.sleep(1000); // the broker's metadata follows the controller's
      }
      admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1)
          .configs(Map.of("min.insync.replicas", "1")))).all().get();
    }
  }

  private static void run(String bootstrap, String topic, int cycles, int warmUp,
      List<Double> committed, List<Double> visible) throws Exception {
    Properties producerProps = new Properties();
    producerProps.put("bootstrap.servers", bootstrap);
    producerProps.put("transactional.id", topic);
    producerProps.put("linger.ms", "0");
    producerProps.put("acks", "all");
    producerProps.put("key.serializer", StringSerializer.class.getName());
    producerProps.put("value.serializer", ByteArraySerializer.class.getName());
    Properties consumerProps = new Properties();
    consumerProps.put("bootstrap.servers", bootstrap);
    consumerProps.put("isolation.level", "read_committed");
    consumerProps.put("enable.auto.commit", "false");
    consumerProps.put("fetch.max.wait.ms", "500"); // as bench.kafka_txn's consumer
    consumerProps.put("key.deserializer", StringDeserializer.class.getName());
    consumerProps.put("value.deserializer", ByteArrayDeserializer.class.getName());
    TopicPartition watched = new TopicPartition(topic, 0);
    BlockingQueue<Map.Entry<String, Long>> seen = new LinkedBlockingQueue<>();
    boolean[] stop = {false};
    KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(consumerProps);
    consumer.assign(List.of(watched));
    consumer.seekToEnd(List.of(watched));
    consumer.position(watched);
    Thread reader = new Thread(() -> {
      try {
        while (!stop[0]) {
          for (ConsumerRecord<String, byte[]> r : consumer.poll(Duration.ofMillis(100))) {
            seen.add(Map.entry(r.key(), System.nanoTime()));
          }
        }
      } finally {
        consumer.close();
      }
    });
    reader.start();
    byte[] value = new byte[200];
    try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(producerProps)) {
      producer.initTransactions();
      for (int cycle = 0; cycle < warmUp + cycles; cycle++) {
        String key = Integer.toString(cycle);
        long began = System.nanoTime();
        producer.beginTransaction();
        for (int partition = 0; partition < 3; partition++) {
          producer.send(new ProducerRecord<>(topic, partition, key, value));
        }
        producer.commitTransaction();
        long done = System.nanoTime();
        Map.Entry<String, Long> next = seen.take(); // blocking: no core spent waiting
        while (!next.getKey().equals(key)) {
          next = seen.take();
        }
        long shown = Math.max(next.getValue(), done);
        if (cycle >= warmUp) {
          committed.add(Math.round((done - began) / 1e4) / 100.0);
          visible.add(Math.round((shown - began) / 1e4) / 100.0);
        }
      }
    } finally {
      stop[0] = true;
      reader.join();
    }
  }
}
