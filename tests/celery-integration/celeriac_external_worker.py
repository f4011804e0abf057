"""pytest plugin: run Celery's integration suite against an external celeriac worker.

Loaded with ``-p celeriac_external_worker`` before ``celery.contrib.pytest`` and before Celery's
``t/integration/conftest.py``, which imports ``celery_session_worker`` from
``celery.contrib.pytest``: the module attribute is replaced here, at import, by a fixture that
starts no worker in this process but waits until the celeriac worker started by
``tests/celery-integration/run`` answers ``ping`` under the node name the tests expect
(``anon_nodename()``, ``gen<pid of this process>@<host>``).

A test that outlives its timeout (pytest-timeout's marker or ``--timeout``) fails with
``Timeout`` at the limit and again every 10 s: pytest-timeout's alarm is cancelled by the first
``subtests.test()`` block's report and a subtest swallows a failure, so a later call without a
timeout (``result.get()``) would otherwise hang the whole run.

Also deselects the tests listed in ``deselected.txt`` (each with its reason) and writes the
outcome of every test, by module, to the JSON file named by ``CELERIAC_INTEGRATION_SUMMARY``.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import celery.contrib.pytest as celery_pytest
import pytest
from celery.utils.nodenames import anon_nodename

HERE = Path(__file__).resolve().parent
READY_DEADLINE_S = 180


@pytest.fixture(scope='session')
def celery_session_worker(
    request,
    celery_session_app,
    celery_includes,
    celery_class_tasks,
    celery_worker_pool,
    celery_worker_parameters,
):
    """The external celeriac worker: registers the suite's tasks in the test app (as the
    in-process fixture does, so signatures resolve) and waits until the worker answers."""
    for module in celery_includes:
        celery_session_app.loader.import_task_module(module)
    for class_task in celery_class_tasks:
        celery_session_app.register_task(class_task)
    node = anon_nodename()
    deadline = time.monotonic() + READY_DEADLINE_S
    while True:
        replies = celery_session_app.control.ping(destination=[node], timeout=1.0)
        if any(node in reply for reply in replies):
            break
        if time.monotonic() > deadline:
            pytest.exit(
                f'the celeriac worker {node} did not answer ping within {READY_DEADLINE_S} s',
                returncode=3,
            )
    yield SimpleNamespace(hostname=node, app=celery_session_app)


celery_pytest.celery_session_worker = celery_session_worker


def _deselect_list():
    """``deselected.txt``: ``<node id>  # <reason>`` per line; a node id without ``[...]``
    names every parametrization of the test."""
    entries = {}
    for line in (HERE / 'deselected.txt').read_text().splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        nodeid, _, reason = line.partition('#')
        if not reason.strip():
            raise pytest.UsageError(f'deselected.txt: no reason given for {nodeid.strip()}')
        entries[nodeid.strip()] = reason.strip()
    return entries


def pytest_collection_modifyitems(config, items):
    listed = _deselect_list()
    keep, drop, matched = [], [], set()
    for item in items:
        key = item.nodeid if item.nodeid in listed else item.nodeid.split('[')[0]
        if key in listed:
            drop.append(item)
            matched.add(key)
        else:
            keep.append(item)
    if os.environ.get('CELERIAC_INTEGRATION_CHECK_DESELECT') == '1':
        stale = sorted(set(listed) - matched)
        if stale:
            raise pytest.UsageError(f'deselected.txt names tests that were not collected: {stale}')
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _module(nodeid):
    return nodeid.split('::')[0].rsplit('/', 1)[-1].removesuffix('.py')


def _crash(report):
    crash = getattr(report.longrepr, 'reprcrash', None)
    if crash is not None:
        return crash.message.splitlines()[0] if crash.message else ''
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return str(report.longrepr).splitlines()[-1] if report.longrepr else ''


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    path = os.environ.get('CELERIAC_INTEGRATION_SUMMARY')
    if not path:
        return
    stats = terminalreporter.stats
    modules = {}
    failures = []

    def count(module, key):
        row = modules.setdefault(module, {})
        row[key] = row.get(key, 0) + 1

    for key in ('passed', 'failed', 'error', 'skipped', 'xfailed', 'xpassed', 'rerun'):
        for report in stats.get(key, []):
            if key == 'passed' and getattr(report, 'when', 'call') != 'call':
                continue
            count(_module(report.nodeid), key)
            if key in ('failed', 'error'):
                failures.append({'nodeid': report.nodeid, 'when': report.when,
                                 'message': _crash(report)})
    for item in stats.get('deselected', []):
        count(_module(item.nodeid), 'deselected')
    Path(path).write_text(json.dumps({'modules': modules, 'failures': failures}, indent=1))


REPEAT_TIMEOUT_S = 10


def _timeout_of(item):
    marker = item.get_closest_marker('timeout')
    if marker is not None:
        value = marker.kwargs.get('timeout', marker.args[0] if marker.args else None)
        if value is not None:
            return float(value)
    value = item.config.getoption('timeout', None)
    return float(value) if value else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """The test's timeout, raised at the limit and again every 10 s while the test runs on:
    a watcher thread sends SIGUSR2, handled here by failing the test. (pytest-timeout's own
    SIGALRM is cancelled by the first subtest's report, which is how a test could hang.)"""
    limit = _timeout_of(item)
    if not limit:
        yield
        return
    done = threading.Event()
    main = threading.main_thread().ident

    def on_alarm(signum, frame):
        if not done.is_set():
            pytest.fail(f'Timeout >{limit:g}s')

    def repeat():
        if done.wait(limit):
            return
        while not done.is_set():
            signal.pthread_kill(main, signal.SIGUSR2)
            done.wait(REPEAT_TIMEOUT_S)

    previous = signal.signal(signal.SIGUSR2, on_alarm)
    watcher = threading.Thread(target=repeat, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGUSR2, previous if previous is not None else signal.SIG_DFL)
