"""Where things are kept: the MongoDB store, the spool of writes while it is away, limit counters, housekeeping."""
