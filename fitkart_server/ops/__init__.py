"""What operators see: status page, stats, metrics, the request log, and the operator commands."""
