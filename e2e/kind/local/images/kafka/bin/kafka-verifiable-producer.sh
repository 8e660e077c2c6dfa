#!/bin/bash
# kafka-verifiable-producer.sh: org.apache.kafka.tools.VerifiableProducer, as in the Apache distribution.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.VerifiableProducer "$@"
