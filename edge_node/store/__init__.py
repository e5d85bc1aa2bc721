"""Storage: the encrypted SQLite database, its key, migrations and the writer thread."""
