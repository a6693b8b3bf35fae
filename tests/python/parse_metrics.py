#!/usr/bin/env python3
"""Parses OpenMetrics text from stdin with the official Python client's parser and prints
every sample as JSON lines: {"name": ..., "labels": {...}, "value": ...}. A malformed
exposition makes the parser raise, and this script exit non-zero."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))
