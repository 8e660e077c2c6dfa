#!/bin/bash
# kafka-console-consumer.sh: org.apache.kafka.tools.consumer.ConsoleConsumer, as in the Apache distribution.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.consumer.ConsoleConsumer "$@"
