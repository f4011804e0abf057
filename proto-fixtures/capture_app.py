"""Celery app and tasks used by the fixture capture (producer side and, for results, a real worker).

`make_app()` builds a fresh app with the given settings; the module-level `app` is what
`celery -A capture_app worker` loads, configured from the environment:

* CAPTURE_BROKER_URL   broker URL (the capture's private redis-server)
* CAPTURE_BACKEND_URL  result backend URL
* CAPTURE_EXTENDED     "1" → result_extended=True
"""

import os
import time

from celery import Celery


class CustomError(Exception):
    """An application-defined exception, to see how the backend stores it."""


def make_app(broker_url, backend_url, **conf):
    """A Celery app on the given broker/backend with the capture's tasks registered by name."""
    app = Celery("capture", broker=broker_url, backend=backend_url, set_as_current=False)
    app.conf.update(
        accept_content=["json", "msgpack", "yaml"],
        result_accept_content=["json", "msgpack", "yaml"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.conf.update(conf)

    @app.task(name="tasks.add", shared=False)
    def add(x, y):
        return x + y

    @app.task(name="tasks.mul", shared=False)
    def mul(x, y):
        return x * y

    @app.task(name="tasks.tsum", shared=False)
    def tsum(values):
        return sum(values)

    @app.task(name="tasks.on_error", shared=False)
    def on_error(request, exc, traceback):
        return None

    @app.task(name="tasks.echo", shared=False)
    def echo(*args, **kwargs):
        """Return its only positional argument, or everything it was given."""
        if len(args) == 1 and not kwargs:
            return args[0]
        return {"args": list(args), "kwargs": kwargs}

    @app.task(name="tasks.fail_value_error", shared=False)
    def fail_value_error(message):
        raise ValueError(message)

    @app.task(name="tasks.fail_custom", shared=False)
    def fail_custom(message):
        raise CustomError(message)

    @app.task(name="tasks.slow", shared=False, track_started=True)
    def slow(seconds):
        time.sleep(seconds)
        return seconds

    @app.task(name="tasks.retry_once", shared=False, bind=True)
    def retry_once(self):
        if self.request.retries == 0:
            raise self.retry(countdown=1, exc=ValueError("first attempt"))
        return self.request.retries

    @app.task(name="tasks.quiet", shared=False, ignore_result=True)
    def quiet(x):
        return x

    return app


app = make_app(
    os.environ.get("CAPTURE_BROKER_URL", "redis://127.0.0.1:1/0"),
    os.environ.get("CAPTURE_BACKEND_URL", "redis://127.0.0.1:1/1"),
    result_extended=os.environ.get("CAPTURE_EXTENDED") == "1",
)
