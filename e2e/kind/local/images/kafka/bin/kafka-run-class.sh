#!/bin/bash
# kafka-run-class.sh CLASS [ARGS...]: runs a Kafka main class with the jars in /opt/kafka/libs,
# honouring the Apache scripts' variables: KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS,
# KAFKA_LOG4J_OPTS, KAFKA_OPTS, JAVA_HOME.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: kafka-run-class.sh CLASS [ARGS...]" >&2; exit 1; }
base=/opt/kafka
java="${JAVA_HOME:+${JAVA_HOME}/bin/}java"
# shellcheck disable=SC2086  # the *_OPTS variables are word lists, as in Apache's script
exec "${java}" ${KAFKA_HEAP_OPTS:--Xmx256m} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true} \
  ${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=${base}/config/tools-log4j2.xml} \
  -Dkafka.logs.dir="${LOG_DIR:-${base}/logs}" ${KAFKA_OPTS:-} \
  -cp "${base}/libs/*" "$@"
