"""Settings of the example project, all from the environment.

DATABASE_URL: postgres://... (default postgres://postgres@127.0.0.1:5432/tickets) or sqlite:///path.
CELERY_BROKER_URL / CELERY_RESULT_BACKEND: the Redis both Python and celeriac workers use.
"""
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "false").lower() in ("1", "true", "yes")
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "tickets",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "proj.urls"
WSGI_APPLICATION = "proj.wsgi.application"

DATABASES = {
    "default": dj_database_url.config(
        default="postgres://postgres@127.0.0.1:5432/tickets", conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", "60"))
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_ROUTES = {
    # Served by celeriac (examples/django-app/celeriac.toml); every other task stays on the
    # Python workers' default queue. Remove this line to roll back.
    "tickets.get_ticket": {"queue": "celeriac"},
}

# celeriac's read-through cache, for invalidations sent from post_save/post_delete
# (tickets/celeriac_cache.py). Must match [cache] in celeriac.toml; its Redis defaults to the
# result backend, as in celeriac.
CELERIAC_CACHE_REDIS_URL = os.environ.get("CELERIAC_CACHE_REDIS_URL", CELERY_RESULT_BACKEND)
CELERIAC_CACHE_PREFIX = os.environ.get("CELERIAC_CACHE_PREFIX", "celeriac:cache:")
CELERIAC_CACHE_VERSION = os.environ.get("CELERIAC_CACHE_VERSION", "v1")

# Only for the benchmark's Python baseline (tickets.get_ticket_py): Django's cache framework.
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ.get("DJANGO_CACHE_URL", CELERIAC_CACHE_REDIS_URL),
    }
}
