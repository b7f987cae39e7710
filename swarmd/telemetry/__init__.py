"""What operators see: Prometheus metrics, OpenTelemetry spans, structured logs. Imports only the vocabulary."""
