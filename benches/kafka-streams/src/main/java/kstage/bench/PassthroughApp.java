package kstage.bench;

import java.util.Properties;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The Kafka Streams peer of the kstage fail-over measurement (tests/it/common/chaos/failover.rs):
 * the {@code passthrough} topology (key, value and headers copied unchanged from the input to the
 * output partition Streams' default partitioner picks) under {@code exactly_once_v2}.
 *
 * <p>Everything not given on the command line keeps Kafka Streams' default ({@code
 * commit.interval.ms} 100 ms and {@code transaction.timeout.ms} 10 s under exactly_once_v2). The
 * harness passes the consumer's {@code session.timeout.ms}, {@code heartbeat.interval.ms}, {@code
 * client.id} and, for static membership, {@code group.instance.id} with {@code --config}.
 *
 * <pre>
 * java -cp 'target/kstage-bench-streams.jar:target/lib/*' kstage.bench.PassthroughApp \
 *   --bootstrap-servers 127.0.0.1:19092 --input in --output out --application-id app \
 *   --state-dir DIR [--config KEY=VALUE]...
 * </pre>
 *
 * <p>A clean stop (SIGTERM) closes the Streams instance and exits 0; the application stopping
 * in state ERROR exits 1.
 */
public final class PassthroughApp {
  private PassthroughApp() {}

  public static void main(String[] args) throws InterruptedException {
    Properties props = new Properties();
    String input = null;
    String output = null;
    for (int i = 0; i < args.length; i += 2) {
      if (i + 1 >= args.length) {
        usage("missing a value after " + args[i]);
      }
      String value = args[i + 1];
      switch (args[i]) {
        case "--bootstrap-servers" -> props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, value);
        case "--application-id" -> props.put(StreamsConfig.APPLICATION_ID_CONFIG, value);
        case "--state-dir" -> props.put(StreamsConfig.STATE_DIR_CONFIG, value);
        case "--input" -> input = value;
        case "--output" -> output = value;
        case "--config" -> {
          int eq = value.indexOf('=');
          if (eq <= 0) {
            usage("--config takes KEY=VALUE, not " + value);
          }
          props.put(value.substring(0, eq), value.substring(eq + 1));
        }
        default -> usage("unexpected argument " + args[i]);
      }
    }
    if (input == null || output == null || !props.containsKey(StreamsConfig.APPLICATION_ID_CONFIG)
        || !props.containsKey(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG)) {
      usage("--bootstrap-servers, --input, --output and --application-id are required");
    }
    props.putIfAbsent(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.putIfAbsent("auto.offset.reset", "earliest");

    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
        .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    Peer.runUntilStopped(
        streams,
        (now, before) ->
            System.err.println("kstage-failover-streams: state " + before + " -> " + now),
        true,
        problem -> System.err.println("kstage-failover-streams: " + problem));
  }

  private static void usage(String problem) {
    System.err.println("kstage-failover-streams: " + problem);
    System.err.println(
        "usage: --bootstrap-servers HOST:PORT --input TOPIC --output TOPIC --application-id ID"
            + " [--state-dir DIR] [--config KEY=VALUE]...");
    System.exit(2);
  }
}
