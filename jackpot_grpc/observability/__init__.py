"""What the service tells about itself: request metrics and their history's records,
OpenTelemetry traces and metrics, the log format, the HTTP access log and the counts of
calls refused on purpose."""
