#!/bin/bash
# kafka-consumer-groups.sh: org.apache.kafka.tools.consumer.group.ConsumerGroupCommand, as in the Apache distribution.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@"
