#!/bin/sh
# Runs the broker in the foreground as the rabbitmq user (Debian's wrapper switches user).
set -e
mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
exec "$@"
