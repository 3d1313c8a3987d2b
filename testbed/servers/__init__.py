"""Servers started on loopback ports: MongoDB or FerretDB, PostgreSQL, a PostgREST stand-in, gunicorn as deployed."""
