package kstage.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The kstage benchmark's Kafka Streams peer: the {@code bench-enrich} transform (parse the JSON
 * value, add {@code amount_with_tax = round(amount * (1 + tax_rate), 2)}, serialize it again; the
 * key, an id, passes through) as the stateless topology a Kafka Streams user would write.
 *
 * <p>Everything not given on the command line keeps Kafka Streams' default, in particular
 * {@code commit.interval.ms} (100 ms under exactly_once_v2) and the producer and consumer settings
 * Streams chooses itself.
 *
 * <pre>
 * java -Xmx512m -jar target/kstage-bench-streams.jar \
 *   --bootstrap-servers 127.0.0.1:19092 --input in --output out --application-id app \
 *   [--guarantee exactly_once_v2|at_least_once] [--threads 1] [--state-dir DIR] [--tax-rate 0.2]
 *   [--config KEY=VALUE]...
 * </pre>
 */
public final class EnrichApp {
  private static final ObjectMapper MAPPER = new ObjectMapper();

  private EnrichApp() {}

  /** Adds {@code amount_with_tax} to one JSON object; the same rule as topologies/bench_enrich.rs. */
  static byte[] enrich(byte[] value, double taxFactor) {
    try {
      JsonNode tree = MAPPER.readTree(value);
      if (!(tree instanceof ObjectNode)) {
        throw new IllegalArgumentException("the value is not a JSON object");
      }
      ObjectNode record = (ObjectNode) tree;
      JsonNode amount = record.get("amount");
      if (amount == null || !amount.isNumber()) {
        throw new IllegalArgumentException("the value has no numeric amount");
      }
      record.put("amount_with_tax", Math.round(amount.doubleValue() * taxFactor * 100.0) / 100.0);
      return MAPPER.writeValueAsBytes(record);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  public static void main(String[] args) throws InterruptedException {
    Peer.CommandLine line = Peer.parse(args, EnrichApp::usage);
    Map<String, String> options = line.options;
    Properties props = line.props;
    String input = required(options, "input");
    String output = required(options, "output");
    double taxFactor = 1.0 + Double.parseDouble(options.getOrDefault("tax-rate", "0.2"));

    props.putIfAbsent(StreamsConfig.APPLICATION_ID_CONFIG, required(options, "application-id"));
    props.putIfAbsent(
        StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(options, "bootstrap-servers"));
    props.putIfAbsent(
        StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
        options.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2));
    props.putIfAbsent(StreamsConfig.NUM_STREAM_THREADS_CONFIG, options.getOrDefault("threads", "1"));
    if (options.containsKey("state-dir")) {
      props.putIfAbsent(StreamsConfig.STATE_DIR_CONFIG, options.get("state-dir"));
    }
    props.putIfAbsent("auto.offset.reset", "earliest");

    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(input, Consumed.with(Serdes.String(), Serdes.ByteArray()))
        .mapValues(value -> enrich(value, taxFactor))
        .to(output, Produced.with(Serdes.String(), Serdes.ByteArray()));

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    System.err.println("kstage-bench-streams: starting " + props.get(StreamsConfig.APPLICATION_ID_CONFIG));
    Peer.runUntilStopped(
        streams,
        (now, before) -> {},
        false,
        problem -> System.err.println("kstage-bench-streams: " + problem));
  }

  private static String required(Map<String, String> options, String name) {
    return Peer.required(options, name, EnrichApp::usage);
  }

  private static void usage(String problem) {
    System.err.println("kstage-bench-streams: " + problem);
    System.err.println(
        "usage: --bootstrap-servers HOST:PORT --input TOPIC --output TOPIC --application-id ID"
            + " [--guarantee exactly_once_v2|at_least_once] [--threads N] [--state-dir DIR]"
            + " [--tax-rate R] [--config KEY=VALUE]...");
    System.exit(2);
  }
}
