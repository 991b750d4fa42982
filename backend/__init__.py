"""The slimpipe service: FastAPI over SQL, queueing runs to Celery workers. Never imports torch."""
