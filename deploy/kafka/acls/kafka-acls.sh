#!/usr/bin/env bash
# ACL examples for service-account principals, with Kafka's own kafka-acls tool.
# Run as a super user against a listener the filter is NOT on (e.g. INTERNAL from a broker pod):
#
#   BOOTSTRAP=127.0.0.1:9094 ADMIN_CONFIG=/etc/kafka/admin.properties deploy/kafka/acls/kafka-acls.sh
#
# admin.properties:
#   security.protocol=SASL_PLAINTEXT
#   sasl.mechanism=OAUTHBEARER
#   sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="kafka-broker";
#
# The principal is User:<what the filter maps the SPIFFE ID to>; with the default template
# ({spiffe_id}) that is the full SPIFFE ID of the client's service account.
set -euo pipefail

BOOTSTRAP=${BOOTSTRAP:?set BOOTSTRAP, e.g. 127.0.0.1:9094}
ADMIN_CONFIG=${ADMIN_CONFIG:?set ADMIN_CONFIG to a super-user client config}
KAFKA_ACLS=${KAFKA_ACLS:-/opt/kafka/bin/kafka-acls.sh}
TRUST_DOMAIN=${TRUST_DOMAIN:-cluster.local}

sa() { printf 'User:spiffe://%s/ns/%s/sa/%s' "${TRUST_DOMAIN}" "$1" "$2"; }
acls() { "${KAFKA_ACLS}" --bootstrap-server "${BOOTSTRAP}" --command-config "${ADMIN_CONFIG}" "$@"; }

# apps/producer writes topic orders (Kafka >= 3.0: Write on the topic covers idempotent produce)
acls --add --allow-principal "$(sa apps producer)" --operation Write --operation Describe --topic orders

# apps/consumer reads orders in consumer groups whose ids start with orders-readers
acls --add --allow-principal "$(sa apps consumer)" --operation Read --operation Describe --topic orders
acls --add --allow-principal "$(sa apps consumer)" --operation Read \
  --group orders-readers --resource-pattern-type prefixed

# every service account of namespace analytics may read topics prefixed metrics.
# (prefixed principals do not exist in Kafka; with identity.spiffe.template "{namespace}" the
#  principal would be User:analytics and one ACL would cover the namespace)
acls --add --allow-principal "$(sa analytics reporter)" --operation Read --operation Describe \
  --topic metrics. --resource-pattern-type prefixed

# a transactional producer additionally needs its transactional id
acls --add --allow-principal "$(sa apps billing)" --operation Write --operation Describe \
  --transactional-id billing- --resource-pattern-type prefixed

acls --list --topic orders
