#!/bin/bash
# kafka-configs.sh: org.apache.kafka.tools.ConfigCommand, as in the Apache distribution.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.ConfigCommand "$@"
