#!/bin/bash
# kafka-producer-perf-test.sh: org.apache.kafka.tools.ProducerPerformance, as in the Apache distribution.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.ProducerPerformance "$@"
