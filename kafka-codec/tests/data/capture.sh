#!/usr/bin/env bash
# How the byte vectors in this folder were captured (run by hand against a running
# `make stack-up`; not part of the tests). tcpdump records the plaintext hop between
# Envoy and the broker's MESH listener, so each stream holds what the filter injected
# (SaslHandshake + SaslAuthenticate) followed by exactly what the real client sent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/../../.." && pwd)"
[[ $# -eq 0 ]] || { echo "usage: capture.sh   (no arguments; needs a running make stack-up)" >&2; exit 2; }
set -a
# shellcheck source=/dev/null
. "${REPO}/e2e/.state/stack.env"
set +a
PORT="${KAFKA_IDENTITY_MESH_PORT:-19092}"
PCAP="$(mktemp --suffix .pcap)"
tcpdump -i lo -s 0 -U -w "${PCAP}" "tcp port ${PORT}" 2>/dev/null &
TCPDUMP=$!
trap 'kill ${TCPDUMP} 2>/dev/null || true; rm -f "${PCAP}"' EXIT
sleep 1
CERTS="${KAFKA_IDENTITY_CERTS}"
kcat_ssl=(-b "${KAFKA_IDENTITY_BOOTSTRAP}" -X security.protocol=SSL -X "ssl.ca.location=${KAFKA_IDENTITY_CA}")
producer=(-X "ssl.certificate.location=${CERTS}/apps.producer.crt" -X "ssl.key.location=${CERTS}/apps.producer.key")
consumer=(-X "ssl.certificate.location=${CERTS}/apps.consumer.crt" -X "ssl.key.location=${CERTS}/apps.consumer.key")
# kcat (librdkafka 1.9): two produce requests with acks=all, then acks=0.
printf 'capture-1\ncapture-2\n' | kcat "${kcat_ssl[@]}" "${producer[@]}" -P -t orders -X acks=all -X linger.ms=0
printf 'capture-3\n' | kcat "${kcat_ssl[@]}" "${producer[@]}" -P -t orders -X acks=0
# Java client (kafka-clients 4.4.0) through Kafka's console producer.
printf 'capture-java\n' | java -cp "${KAFKA_IDENTITY_KAFKA_CLASSPATH}" -Dlog4j2.configurationFile="${REPO}/e2e/local/tools-log4j2.xml" \
  org.apache.kafka.tools.ConsoleProducer --bootstrap-server "${KAFKA_IDENTITY_BOOTSTRAP}" \
  --topic orders --command-config "${KAFKA_IDENTITY_CLIENT_CONFIGS}/apps.producer.ssl.properties"
# kcat consumer in group orders-readers: Fetch, group coordination.
kcat "${kcat_ssl[@]}" "${consumer[@]}" -G orders-readers orders -c 1 -e -X auto.offset.reset=earliest >/dev/null || true
sleep 2
kill "${TCPDUMP}"; wait "${TCPDUMP}" 2>/dev/null || true
rm -f "${HERE}"/capture.*.bin
python3 "${HERE}/pcap_streams.py" "${PCAP}" "${PORT}" "${HERE}/capture"
