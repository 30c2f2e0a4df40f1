package kstage.bench;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The Kafka Streams peer of kstage's stateful topologies (issue 13, benches/state/compare.sh):
 *
 * <ul>
 *   <li>{@code count}: {@code groupByKey().count()}, emitting each update with the input key as
 *       key and the count in decimal as value (topologies/count.rs);
 *   <li>{@code windowed-count}: a tumbling event-time window with a grace period, {@code
 *       windowedBy(TimeWindows.ofSizeAndGrace(size, grace)).count()} with {@code
 *       suppress(untilWindowCloses(unbounded()))}, emitting one final result per window with the
 *       input key as key and {@code {"key","start","end","count"}} as value
 *       (topologies/windowed_count.rs).
 * </ul>
 *
 * <p>Stores are Kafka Streams' defaults: RocksDB, with a changelog topic each, the record cache
 * at its default size. Everything not given on the command line keeps Kafka Streams' default, in
 * particular {@code processing.guarantee=exactly_once_v2} here and {@code commit.interval.ms}
 * (100 ms under exactly_once_v2).
 *
 * <p>For the benchmark's restore times the app prints, to stderr, one line per state transition
 * and per restored store partition, each starting with the wall clock in epoch milliseconds:
 *
 * <pre>
 * kstage-bench-streams: at=1700000000000 state=RUNNING from=REBALANCING
 * kstage-bench-streams: at=1700000000000 restored store=counts partition=3 records=166000 ms=812
 * </pre>
 *
 * <pre>
 * java -cp target/kstage-bench-streams.jar kstage.bench.StateApp \
 *   --bootstrap-servers 127.0.0.1:19092 --input in --output out --application-id app \
 *   --topology count|windowed-count [--size-ms 60000] [--grace-ms 10000] [--threads 1]
 *   [--state-dir DIR] [--config KEY=VALUE]...
 * </pre>
 */
public final class StateApp {
  private StateApp() {}

  private static void log(String line) {
    System.err.println("kstage-bench-streams: at=" + System.currentTimeMillis() + " " + line);
  }

  private static String jsonString(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') {
        b.append('\\').append(c);
      } else if (c < 0x20) {
        b.append(String.format("\\u%04x", (int) c));
      } else {
        b.append(c);
      }
    }
    return b.append('"').toString();
  }

  /** Builds the topology's stream graph from {@code input} to {@code output}. */
  static void build(
      StreamsBuilder builder,
      String topology,
      String input,
      String output,
      long sizeMs,
      long graceMs) {
    KStream<byte[], byte[]> in =
        builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()));
    switch (topology) {
      case "count":
        in.groupByKey()
            .count(Materialized.<byte[], Long, KeyValueStore<Bytes, byte[]>>as("counts"))
            .toStream()
            .mapValues(count -> Long.toString(count).getBytes(StandardCharsets.UTF_8))
            .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        break;
      case "windowed-count":
        in.groupByKey()
            .windowedBy(
                TimeWindows.ofSizeAndGrace(Duration.ofMillis(sizeMs), Duration.ofMillis(graceMs)))
            .count(Materialized.<byte[], Long, WindowStore<Bytes, byte[]>>as("windows"))
            .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
            .toStream()
            .map(
                (window, count) -> {
                  String key = new String(window.key(), StandardCharsets.UTF_8);
                  String value =
                      "{\"key\":"
                          + jsonString(key)
                          + ",\"start\":"
                          + window.window().start()
                          + ",\"end\":"
                          + window.window().end()
                          + ",\"count\":"
                          + count
                          + "}";
                  return KeyValue.pair(window.key(), value.getBytes(StandardCharsets.UTF_8));
                })
            .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        break;
      default:
        usage("--topology must be count or windowed-count, not " + topology);
    }
  }

  public static void main(String[] args) throws InterruptedException {
    Peer.CommandLine line = Peer.parse(args, StateApp::usage);
    Map<String, String> options = line.options;
    Properties props = line.props;
    String input = required(options, "input");
    String output = required(options, "output");
    String topology = required(options, "topology");
    long sizeMs = Long.parseLong(options.getOrDefault("size-ms", "60000"));
    long graceMs = Long.parseLong(options.getOrDefault("grace-ms", "10000"));

    props.putIfAbsent(StreamsConfig.APPLICATION_ID_CONFIG, required(options, "application-id"));
    props.putIfAbsent(
        StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(options, "bootstrap-servers"));
    props.putIfAbsent(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.putIfAbsent(StreamsConfig.NUM_STREAM_THREADS_CONFIG, options.getOrDefault("threads", "1"));
    if (options.containsKey("state-dir")) {
      props.putIfAbsent(StreamsConfig.STATE_DIR_CONFIG, options.get("state-dir"));
    }
    props.putIfAbsent("auto.offset.reset", "earliest");

    StreamsBuilder builder = new StreamsBuilder();
    build(builder, topology, input, output, sizeMs, graceMs);
    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    streams.setGlobalStateRestoreListener(
        new StateRestoreListener() {
          private final Map<TopicPartition, Long> started = new HashMap<>();

          @Override
          public synchronized void onRestoreStart(
              TopicPartition partition, String store, long startOffset, long endOffset) {
            started.put(partition, System.currentTimeMillis());
            log(
                "restore-start store="
                    + store
                    + " partition="
                    + partition.partition()
                    + " from="
                    + startOffset
                    + " to="
                    + endOffset);
          }

          @Override
          public void onBatchRestored(
              TopicPartition partition, String store, long batchEndOffset, long numRestored) {}

          @Override
          public synchronized void onRestoreEnd(
              TopicPartition partition, String store, long totalRestored) {
            long ms = System.currentTimeMillis() - started.getOrDefault(partition, 0L);
            log(
                "restored store="
                    + store
                    + " partition="
                    + partition.partition()
                    + " records="
                    + totalRestored
                    + " ms="
                    + ms);
          }
        });
    log("starting application.id=" + props.get(StreamsConfig.APPLICATION_ID_CONFIG));
    Peer.runUntilStopped(
        streams, (now, before) -> log("state=" + now + " from=" + before), false, StateApp::log);
  }

  private static String required(Map<String, String> options, String name) {
    return Peer.required(options, name, StateApp::usage);
  }

  private static void usage(String problem) {
    System.err.println("kstage-bench-streams StateApp: " + problem);
    System.err.println(
        "usage: --bootstrap-servers HOST:PORT --input TOPIC --output TOPIC"
            + " --application-id ID --topology count|windowed-count [--size-ms MS]"
            + " [--grace-ms MS] [--threads N] [--state-dir DIR] [--config KEY=VALUE]...");
    System.exit(2);
  }
}
