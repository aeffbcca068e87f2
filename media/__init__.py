"""Media workers: the only code that touches pjsua2 (worker.py, endpoint.py)."""
