"""Prints the runner's table and its last line from the plugin's JSON summary."""

import json
import sys

COLUMNS = ('passed', 'failed', 'skipped', 'deselected')


def main(path):
    data = json.load(open(path))
    modules = data['modules']
    total = {key: 0 for key in ('passed', 'failed', 'error', 'skipped', 'xfailed', 'xpassed',
                                'deselected', 'rerun')}
    rows = []
    for name in sorted(modules):
        row = modules[name]
        for key in total:
            total[key] += row.get(key, 0)
        failed = row.get('failed', 0) + row.get('error', 0)
        rows.append((name, row.get('passed', 0), failed, row.get('skipped', 0),
                     row.get('deselected', 0), row.get('xfailed', 0), row.get('xpassed', 0)))
    print('| module | passed | failed | skipped | deselected | xfailed | xpassed |')
    print('|---|---|---|---|---|---|---|')
    for row in rows:
        print('| ' + ' | '.join(str(v) for v in row) + ' |')
    failed = total['failed'] + total['error']
    print(f"xfailed {total['xfailed']}, xpassed {total['xpassed']} "
          f"(failed counts {total['error']} errors; {total['rerun']} reruns)")
    print(f"celery integration: {total['passed']} passed, {failed} failed, "
          f"{total['skipped']} skipped, {total['deselected']} deselected")
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
