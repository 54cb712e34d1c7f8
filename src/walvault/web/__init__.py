"""walvault serve's HTTP side: /metrics, /api/status and the status page."""
