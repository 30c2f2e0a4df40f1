package kstage.bench;

import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.function.BiConsumer;
import java.util.function.Consumer;
import org.apache.kafka.streams.KafkaStreams;

/**
 * What the Kafka Streams peers share: their command line ({@code --config KEY=VALUE} into the
 * Streams properties, every other {@code --name value} into options) and their life cycle (start,
 * close on SIGTERM, exit 1 if the application stopped in state ERROR).
 */
final class Peer {
  private Peer() {}

  /** A parsed command line. */
  static final class CommandLine {
    final Map<String, String> options = new HashMap<>();
    final Properties props = new Properties();
  }

  /** Parses {@code args}; {@code usage} reports a problem and exits 2. */
  static CommandLine parse(String[] args, Consumer<String> usage) {
    CommandLine line = new CommandLine();
    for (int i = 0; i < args.length; i++) {
      if (i + 1 >= args.length) {
        usage.accept("missing a value after " + args[i]);
      }
      String name = args[i];
      String value = args[++i];
      if (name.equals("--config")) {
        int eq = value.indexOf('=');
        if (eq <= 0) {
          usage.accept("--config takes KEY=VALUE, not " + value);
        }
        line.props.put(value.substring(0, eq), value.substring(eq + 1));
      } else if (name.startsWith("--")) {
        line.options.put(name.substring(2), value);
      } else {
        usage.accept("unexpected argument " + name);
      }
    }
    return line;
  }

  /** The option {@code name}; its absence is a usage error. */
  static String required(Map<String, String> options, String name, Consumer<String> usage) {
    String value = options.get(name);
    if (value == null) {
      usage.accept("--" + name + " is required");
    }
    return value;
  }

  /**
   * Starts {@code streams} and waits until it stops: SIGTERM closes it; {@code onState} sees
   * every transition (now, before). An application that stopped in ERROR exits 1; with {@code
   * cleanStopExitsZero} a clean stop exits 0 instead of the JVM's 143 for SIGTERM.
   */
  static void runUntilStopped(
      KafkaStreams streams,
      BiConsumer<KafkaStreams.State, KafkaStreams.State> onState,
      boolean cleanStopExitsZero,
      Consumer<String> log)
      throws InterruptedException {
    CountDownLatch done = new CountDownLatch(1);
    streams.setStateListener(
        (now, before) -> {
          onState.accept(now, before);
          if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
            done.countDown();
          }
        });
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close();
                  done.countDown();
                  if (cleanStopExitsZero && streams.state() != KafkaStreams.State.ERROR) {
                    Runtime.getRuntime().halt(0);
                  }
                },
                "kstage-bench-shutdown"));
    streams.start();
    done.await();
    if (streams.state() == KafkaStreams.State.ERROR) {
      log.accept("the application stopped in state ERROR");
      System.exit(1);
    }
  }
}
