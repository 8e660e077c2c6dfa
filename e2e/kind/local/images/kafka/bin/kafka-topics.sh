#!/bin/bash
# kafka-topics.sh: org.apache.kafka.tools.TopicCommand, as in the Apache distribution.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.TopicCommand "$@"
