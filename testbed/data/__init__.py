"""Generated data: FitKart-shaped records, hostile bodies, rows for the PostgreSQL standing in for Supabase."""
