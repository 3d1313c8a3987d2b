"""The HTTP layer: blueprints, errors, authentication, request hardening, rate limits and the write-or-queue path."""
