"""walvault vs Barman side-by-side benchmark: the pieces behind bench/run.py."""
