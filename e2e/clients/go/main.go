// kafka-identity-go-client: a tiny franz-go program for the e2e suite. It speaks plain Kafka
// over TLS (the TLS stands in for its sidecar) with franz-go's defaults otherwise: no SASL, no
// credentials. The e2e tests (e2e/tests/test_clients.py) run it and judge its output.
//
//	produce --topic T --value V          one record, acks=all, not idempotent (as the Java console
//	                                     producer in the same tests); --library-defaults: franz-go's
//	                                     own producer defaults (idempotent, acks=all) instead
//	consume --topic T --group G --value V  group consumer; exit 0 once V was read (and committed)
//	read    --topic T [--partition P]    fetch partition P from the start without a group
//
// Every mode takes --bootstrap, --ca, --cert, --key and --timeout. Errors are printed as
// "error: <Kafka error name>: <text>"; exit 1 on any failure, 2 on wrong arguments.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

type options struct {
	bootstrap, ca, cert, key string
	topic, group, value      string
	partition                int
	timeout                  time.Duration
	libraryDefaults          bool
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kafka-identity-go-client produce|consume|read --bootstrap HOST:PORT --ca CA.pem --cert CERT.pem --key KEY.pem --topic T [--group G] [--value V] [--partition P] [--timeout 30s]")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	mode := os.Args[1]
	var o options
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	fs.StringVar(&o.bootstrap, "bootstrap", "", "bootstrap server (Envoy)")
	fs.StringVar(&o.ca, "ca", "", "CA certificate (PEM) that signed the server's certificate")
	fs.StringVar(&o.cert, "cert", "", "client certificate (PEM): the workload identity")
	fs.StringVar(&o.key, "key", "", "client key (PEM)")
	fs.StringVar(&o.topic, "topic", "", "topic")
	fs.StringVar(&o.group, "group", "", "consumer group (consume)")
	fs.StringVar(&o.value, "value", "", "record value (produce) or the value to wait for (consume)")
	fs.IntVar(&o.partition, "partition", 0, "partition (read)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long")
	fs.BoolVar(&o.libraryDefaults, "library-defaults", false, "produce: franz-go's default producer settings")
	if err := fs.Parse(os.Args[2:]); err != nil {
		usage()
	}
	if o.bootstrap == "" || o.ca == "" || o.cert == "" || o.key == "" || o.topic == "" {
		usage()
	}
	tlsConfig, err := tlsConfig(o)
	if err != nil {
		fail(err)
	}
	common := []kgo.Opt{
		kgo.SeedBrokers(o.bootstrap),
		kgo.DialTLSConfig(tlsConfig),
		kgo.ClientID("kafka-identity-e2e-go"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	switch mode {
	case "produce":
		err = produce(ctx, o, common)
	case "consume":
		if o.group == "" || o.value == "" {
			usage()
		}
		err = consume(ctx, o, common)
	case "read":
		err = read(ctx, o, common)
	default:
		usage()
	}
	if err != nil {
		fail(err)
	}
}

func tlsConfig(o options) (*tls.Config, error) {
	pem, err := os.ReadFile(o.ca)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", o.ca)
	}
	pair, err := tls.LoadX509KeyPair(o.cert, o.key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// describe names the Kafka error inside err, if any: TOPIC_AUTHORIZATION_FAILED: ...
func describe(err error) string {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return fmt.Sprintf("%s: %s", ke.Message, err)
	}
	return err.Error()
}

func fail(err error) {
	fmt.Printf("error: %s\n", describe(err))
	os.Exit(1)
}

func produce(ctx context.Context, o options, common []kgo.Opt) error {
	opts := common
	if !o.libraryDefaults {
		opts = append(opts,
			kgo.RequiredAcks(kgo.AllISRAcks()),
			// As the Java console producer in the same tests: without idempotence a denied
			// produce fails on the topic (Write), not on InitProducerId (IdempotentWrite).
			kgo.DisableIdempotentWrite(),
		)
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer client.Close()
	res := client.ProduceSync(ctx, &kgo.Record{Topic: o.topic, Value: []byte(o.value)})
	if err := res.FirstErr(); err != nil {
		return err
	}
	fmt.Println("produced")
	return nil
}

// authFailure: errors after which a consumer gives up at once.
func authFailure(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed)
}

func consume(ctx context.Context, o options, common []kgo.Opt) error {
	client, err := kgo.NewClient(append(common,
		kgo.ConsumerGroup(o.group),
		kgo.ConsumeTopics(o.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10*time.Second),
		kgo.DisableAutoCommit(),
	)...)
	if err != nil {
		return err
	}
	defer client.Close()
	for {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("did not read %q within %s", o.value, o.timeout)
		}
		for _, fe := range fetches.Errors() {
			fmt.Printf("error: %s\n", describe(fe.Err))
			if authFailure(fe.Err) {
				return fe.Err
			}
		}
		found := false
		fetches.EachRecord(func(r *kgo.Record) {
			if string(r.Value) == o.value {
				found = true
			}
		})
		if found {
			if err := client.CommitUncommittedOffsets(ctx); err != nil {
				return err
			}
			fmt.Printf("read %s\n", o.value)
			return nil
		}
	}
}

func read(ctx context.Context, o options, common []kgo.Opt) error {
	client, err := kgo.NewClient(append(common,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			o.topic: {int32(o.partition): kgo.NewOffset().AtStart()},
		}),
	)...)
	if err != nil {
		return err
	}
	defer client.Close()
	count := 0
	for {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			fmt.Printf("messages read: %d\n", count)
			return nil
		}
		for _, fe := range fetches.Errors() {
			fmt.Printf("error: %s\n", describe(fe.Err))
			if authFailure(fe.Err) {
				fmt.Printf("messages read: %d\n", count)
				return fe.Err
			}
		}
		fetches.EachRecord(func(r *kgo.Record) {
			count++
			fmt.Printf("record: %s\n", r.Value)
		})
	}
}
