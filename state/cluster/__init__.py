"""The profile store on a Redis Cluster (``store.py``; the protocol in ``base.py``)."""
