"""Proving the mirror against Supabase: sources, verify, repair, backfill, money conversion, legacy migration."""
