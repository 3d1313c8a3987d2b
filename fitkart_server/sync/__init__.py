"""The sync engine: the write rules every table and every write path share (no Flask, no HTTP)."""
