"""The multi-process deployment: PostgreSQL instance storage, Celery run workers on Redis, one gRPC code
server, the webserver and the daemon (``python -m spinlock_assets.cluster up|down|status``)."""
