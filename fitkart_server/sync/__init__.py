"""The sync engine: the write rules every table and every write path share (no Flask, no HTTP).

`engine.SyncEngine` is the way in; `upserts`, `deletes`, `tombstones`, `batch` and `reads`
hold the rules, `write.Write` the context of one write, `rejects` the refused writes kept.
"""
