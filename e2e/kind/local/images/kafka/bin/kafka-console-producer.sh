#!/bin/bash
# kafka-console-producer.sh: org.apache.kafka.tools.ConsoleProducer, as in the Apache distribution.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.ConsoleProducer "$@"
