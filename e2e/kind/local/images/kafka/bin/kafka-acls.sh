#!/bin/bash
# kafka-acls.sh: org.apache.kafka.tools.AclCommand, as in the Apache distribution.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.AclCommand "$@"
