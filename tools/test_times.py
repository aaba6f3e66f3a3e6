"""Print the slowest test modules from pytest's JUnit XML files (tools/test writes one per lane).

Usage: python tools/test_times.py FILE.xml [FILE.xml ...]
Each module's line: the sum of its tests' durations, the number of tests and the lane's file.
"""
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

TOP = 25


def module_times(paths):
    totals = defaultdict(lambda: [0.0, 0])
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as error:
            print('test_times: %s: %s' % (path, error), file=sys.stderr)
            continue
        lane = path.rsplit('/', 1)[-1]
        for case in root.iter('testcase'):
            module = case.get('classname', '').split('.')
            name = '.'.join(part for part in module if part.startswith('test_')) or case.get('classname', '?')
            entry = totals[(name, lane)]
            entry[0] += float(case.get('time') or 0)
            entry[1] += 1
    return totals


def main(argv):
    totals = module_times(argv[1:])
    if not totals:
        return 0
    print('== the %d slowest test modules (sum of their tests\' durations)' % TOP)
    ranked = sorted(totals.items(), key=lambda item: item[1][0], reverse=True)
    for (name, lane), (seconds, count) in ranked[:TOP]:
        print('%8.1f s  %4d tests  %-50s %s' % (seconds, count, name, lane))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
