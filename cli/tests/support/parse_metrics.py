"""Parses a Prometheus text exposition (stdin) with prometheus_client's own parser and
prints each sample as one line, `NAME<TAB>LABELS<TAB>VALUE`, LABELS as `k=v` pairs sorted
and joined by commas: what cli/tests/metrics.rs reads. A body the parser rejects exits 1
with its error. Exits 3 when prometheus_client is not installed, so the test can say so."""

import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    print(f"prometheus_client is not installed: {e}", file=sys.stderr)
    sys.exit(3)

body = sys.stdin.read()
try:
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            print(f"{sample.name}\t{labels}\t{sample.value!r}")
except Exception as e:  # the parser raises ValueError and others on malformed input
    print(f"not a valid exposition: {e}", file=sys.stderr)
    sys.exit(1)
