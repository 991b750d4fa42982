"""Training side: Celery tasks, the pipeline engine, codecs and the model/data zoo."""
