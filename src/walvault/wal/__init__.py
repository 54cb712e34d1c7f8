"""Pure helpers for WAL files: names and LSNs (names), timeline history (history), segment
headers (header, and pagecheck for the import-free checks the restore client needs).

Nothing is imported here: importing one of these modules must not import the others.
"""
