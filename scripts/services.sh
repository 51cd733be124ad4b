#!/usr/bin/env bash
# Starts and stops the services the tests need. Sourced by scripts/test.sh.
start_services() { :; }
stop_services() { :; }
