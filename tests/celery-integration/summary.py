"""Prints the runner's table and its last line from the plugin's JSON summary.

A test counts once: failed when any of its reports failed (call, setup or teardown errors,
subtests), whatever their number; pytest itself also counts each failed subtest."""

import json
import sys


def main(path):
    data = json.load(open(path))
    modules = data['modules']
    failed_ids = {}
    for failure in data['failures']:
        module = failure['nodeid'].split('::')[0].rsplit('/', 1)[-1].removesuffix('.py')
        failed_ids.setdefault(module, set()).add(failure['nodeid'])
    total = {key: 0 for key in ('passed', 'failed', 'skipped', 'deselected', 'xfailed',
                                'xpassed', 'rerun', 'reports')}
    print('| module | passed | failed | skipped | deselected | xfailed | xpassed |')
    print('|---|---|---|---|---|---|---|')
    for name in sorted(modules):
        row = dict(modules[name])
        row['reports'] = row.get('failed', 0) + row.get('error', 0)
        row['failed'] = len(failed_ids.get(name, ()))
        for key in total:
            total[key] += row.get(key, 0)
        print('| ' + ' | '.join(str(v) for v in (
            name, row.get('passed', 0), row['failed'], row.get('skipped', 0),
            row.get('deselected', 0), row.get('xfailed', 0), row.get('xpassed', 0))) + ' |')
    print(f"xfailed {total['xfailed']}, xpassed {total['xpassed']} "
          f"({total['reports']} failure reports incl. subtests and errors; {total['rerun']} reruns)")
    print(f"celery integration: {total['passed']} passed, {total['failed']} failed, "
          f"{total['skipped']} skipped, {total['deselected']} deselected")
    return 1 if total['failed'] else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
