#!/usr/bin/env bash
# Resolves Apache Kafka's broker jars (deploy/kafka/pom.xml: org.apache.kafka:kafka_2.13 and its
# runtime dependencies, pinned) from Maven Central into .kafka/<version>/lib, once: the tests start
# the broker from there (streams/broker.py KafkaBroker). Needs Java 17+ and Maven.
set -euo pipefail
cd "$(dirname "$0")/.."
pom=deploy/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
lib=.kafka/$version/lib
if [ -f "$lib/.complete" ]; then exit 0; fi
command -v java >/dev/null || { echo "Apache Kafka needs Java 17+: apt-get install openjdk-17-jre-headless" >&2; exit 1; }
command -v mvn >/dev/null || { echo "resolving Apache Kafka needs Maven: apt-get install maven" >&2; exit 1; }
echo "resolving Apache Kafka $version from Maven Central into $lib ..." >&2
tmp=$(mktemp -d ".kafka-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/$tmp/lib"
touch "$tmp/lib/.complete"
mkdir -p ".kafka/$version"
# a concurrent run may have finished first: keep whichever landed
mv -T "$tmp/lib" "$lib" 2>/dev/null || test -f "$lib/.complete"
