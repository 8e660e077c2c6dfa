#!/bin/bash
# kafka-storage.sh: kafka.tools.StorageTool, as in the Apache distribution.
exec /opt/kafka/bin/kafka-run-class.sh kafka.tools.StorageTool "$@"
