"""``walvault quickstart``: walvault's whole job on a throwaway local PostgreSQL, in one command."""
