// The benchmark's peer: Kroxylicious 0.12.0's proxy runtime, started through its own API, as a
// TLS-terminating Kafka proxy with no filters in front of a broker's PLAINTEXT listener.
//
// Maven Central has kroxylicious-runtime but not the kroxylicious-app launcher, so this file is
// our launcher: one virtual cluster, one gateway that identifies the broker by port
// (bootstrap = --listen, the broker node = --listen's port + 1), client certificate REQUIRED,
// upstream = the broker's PLAINTEXT bootstrap. Kroxylicious rewrites the broker address in
// Metadata (and FindCoordinator, DescribeCluster) responses to the proxy's own address, and
// connects each broker port to the address that broker advertises upstream: that listener must
// therefore advertise its own, reachable, PLAINTEXT address.
//
// Prints one line starting with "kroxylicious-bench: ready" when both ports listen, then runs
// until SIGTERM/SIGINT (the JVM's shutdown hook shuts the proxy down).
//
// Built and run by bench/kroxylicious/install and bench/kroxylicious/run (see README.md there).

import io.kroxylicious.proxy.KafkaProxy;
import io.kroxylicious.proxy.config.Configuration;
import io.kroxylicious.proxy.config.NamedRange;
import io.kroxylicious.proxy.config.PortIdentifiesNodeIdentificationStrategy;
import io.kroxylicious.proxy.config.ServiceBasedPluginFactoryRegistry;
import io.kroxylicious.proxy.config.TargetCluster;
import io.kroxylicious.proxy.config.VirtualCluster;
import io.kroxylicious.proxy.config.VirtualClusterGateway;
import io.kroxylicious.proxy.config.admin.EndpointsConfiguration;
import io.kroxylicious.proxy.config.admin.ManagementConfiguration;
import io.kroxylicious.proxy.config.admin.PrometheusMetricsConfig;
import io.kroxylicious.proxy.config.tls.KeyPair;
import io.kroxylicious.proxy.config.tls.ServerOptions;
import io.kroxylicious.proxy.config.tls.Tls;
import io.kroxylicious.proxy.config.tls.TlsClientAuth;
import io.kroxylicious.proxy.config.tls.TrustStore;
import io.kroxylicious.proxy.internal.config.Features;
import io.kroxylicious.proxy.service.HostPort;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

public final class KroxyliciousBench {
    private static final String USAGE = String.join("\n",
            "usage: KroxyliciousBench --listen HOST:PORT --upstream HOST:PORT",
            "                         --cert FILE --key FILE --ca FILE [--advertise HOST] [--node-id N]",
            "                         [--metrics HOST:PORT]",
            "  --listen HOST:PORT    the proxy's bootstrap address; the broker node gets PORT+1",
            "  --upstream HOST:PORT  the broker's PLAINTEXT bootstrap (it must advertise itself)",
            "  --cert, --key         the proxy's server certificate and unencrypted key (PEM)",
            "  --ca FILE             CA certificate(s) (PEM) that client certificates must chain to;",
            "                        a client certificate is REQUIRED",
            "  --advertise HOST      host name the proxy gives clients for the broker (default: HOST of --listen)",
            "  --node-id N           the broker's node id (default 1)",
            "  --metrics HOST:PORT   serve Kroxylicious' Prometheus metrics at http://HOST:PORT/metrics (default: off)");

    private KroxyliciousBench() {
    }

    public static void main(String[] args) {
        Map<String, String> opts;
        HostPort listen;
        HostPort upstream;
        Optional<HostPort> metrics;
        int nodeId;
        try {
            opts = parse(args);
            listen = HostPort.parse(opts.get("--listen"));
            upstream = HostPort.parse(opts.get("--upstream"));
            nodeId = Integer.parseInt(opts.getOrDefault("--node-id", "1"));
            metrics = Optional.ofNullable(opts.get("--metrics")).map(HostPort::parse);
            if (listen.port() < 1 || listen.port() > 65534) {
                throw new IllegalArgumentException("--listen: port must leave PORT+1 for the broker node: " + listen);
            }
            if (nodeId < 0) {
                throw new IllegalArgumentException("--node-id: must be >= 0, got " + nodeId);
            }
            for (String f : List.of("--cert", "--key", "--ca")) {
                if (!Files.isReadable(Path.of(opts.get(f)))) {
                    throw new IllegalArgumentException(f + ": cannot read " + opts.get(f));
                }
            }
        }
        catch (IllegalArgumentException e) {
            System.err.println("KroxyliciousBench: " + e.getMessage());
            System.err.println(USAGE);
            System.exit(2);
            return;
        }
        String advertise = opts.getOrDefault("--advertise", listen.host());
        int nodePort = listen.port() + 1;

        // Server side of the client TLS: our key pair, clients verified against --ca (PEM store),
        // no client certificate -> no handshake. Protocols and ciphers: the runtime's defaults.
        Tls downstreamTls = new Tls(
                new KeyPair(opts.get("--key"), opts.get("--cert"), null),
                new TrustStore(opts.get("--ca"), null, Tls.PEM, new ServerOptions(TlsClientAuth.REQUIRED)),
                null, null);

        // One node-id range holding only the broker: bootstrap on --listen, the broker on PORT+1.
        PortIdentifiesNodeIdentificationStrategy byPort = new PortIdentifiesNodeIdentificationStrategy(
                listen, advertise, nodePort, List.of(new NamedRange("broker", nodeId, nodeId)));
        VirtualClusterGateway gateway = new VirtualClusterGateway("tls", byPort, null, Optional.of(downstreamTls));

        // PLAINTEXT upstream (no TLS), no filters (an empty list, not null: null would mean the
        // configuration's default filters), no network/frame logging.
        VirtualCluster cluster = new VirtualCluster("bench", new TargetCluster(upstream.toString(), Optional.empty()),
                null, Optional.empty(), List.of(gateway), false, false, List.of());

        // The management endpoint (Prometheus /metrics) only on request: it binds its own port.
        // No micrometer extras, no io_uring.
        ManagementConfiguration management = metrics
                .map(m -> new ManagementConfiguration(m.host(), m.port(), new EndpointsConfiguration(new PrometheusMetricsConfig())))
                .orElse(null);
        Configuration config = new Configuration(management, List.of(), List.of(), List.of(cluster), List.of(), false,
                Optional.empty());

        KafkaProxy proxy = new KafkaProxy(new ServiceBasedPluginFactoryRegistry(), config, Features.defaultFeatures());
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                proxy.shutdown();
            }
            catch (RuntimeException e) {
                // Already shut down, or never started: nothing left to release.
            }
        }, "kroxylicious-bench-shutdown"));
        try {
            proxy.startup();
        }
        catch (RuntimeException e) {
            System.err.println("KroxyliciousBench: startup failed: " + e);
            System.exit(1);
            return;
        }
        System.out.printf("kroxylicious-bench: ready, listening on %s (broker node %d on %s:%d), upstream %s, client certificate required%n",
                listen, nodeId, listen.host(), nodePort, upstream);
        System.out.flush();
        try {
            proxy.block();
        }
        catch (Exception e) {
            System.err.println("KroxyliciousBench: " + e);
            System.exit(1);
        }
    }

    private static Map<String, String> parse(String[] args) {
        List<String> known = List.of("--listen", "--upstream", "--cert", "--key", "--ca", "--advertise", "--node-id", "--metrics");
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i += 2) {
            if (!known.contains(args[i])) {
                throw new IllegalArgumentException("unknown argument: " + args[i]);
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException(args[i] + ": missing value");
            }
            opts.put(args[i], args[i + 1]);
        }
        for (String required : List.of("--listen", "--upstream", "--cert", "--key", "--ca")) {
            if (!opts.containsKey(required)) {
                throw new IllegalArgumentException("missing " + required);
            }
        }
        return opts;
    }
}
