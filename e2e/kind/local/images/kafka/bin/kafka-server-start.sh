#!/bin/bash
# kafka-server-start.sh: kafka.Kafka, as in the Apache distribution.
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx1G}
export KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/log4j2.xml}
exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$@"
