"""Settings for the apnsd example project (not for production use)."""
import os

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "apnsd.django",   # app label "apnsd": settings below + manage.py apnsd_send
    "pushdemo",
]

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

# No database needed.
DATABASES = {}

USE_TZ = True

# --- apnsd -------------------------------------------------------------
# The test runner script (clients/python/run-tests.sh) exports APNSD_SOCKET
# pointing into a temporary directory where the tests start a demo apnsd.
APNSD_SOCKET = os.environ.get("APNSD_SOCKET", "/run/apnsd/apnsd.sock")
APNSD_APP = os.environ.get("APNSD_APP") or None
APNSD_TIMEOUT = float(os.environ.get("APNSD_TIMEOUT", "10"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"apnsd": {"handlers": ["console"], "level": "WARNING"}},
}
