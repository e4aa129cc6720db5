#!/usr/bin/python3
"""shop_stages.py - where an order's milliseconds go: the latency histograms of every shop
process (services' /metrics, the gateway's admin /metrics, the keel nodes' /metrics),
scraped before and after a run, and the difference printed per histogram series.

    shop_stages.py snap DIR OUT.json      # DIR: the `keel up` directory (services.json)
    shop_stages.py report A.json B.json   # what was observed between the two snapshots

Percentiles come from the cumulative buckets (keel's default: 50 us doubling to ~26 s),
interpolated linearly inside a bucket, so they are estimates within a bucket's width; the
mean is sum/count and includes the slow cards' 2 s where a series sees them (the charge
step, payment's POST /charges): p50 and p90 are the fine cards' figures there.
bench/shop.sh runs it when SHOP_STAGES=1.
"""
import json
import re
import sys
import urllib.request

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([0-9.eE+-]+|\+Inf|NaN)$')
TIMEOUT_S = 3
# series that say nothing about an order's path (scrapes, health checks, the admin API)
SKIP = ('route="/metrics"', 'route="/health', 'route="/healthz"')


def endpoints(d):
    """(process, url) of every /metrics in the shop of directory d."""
    out = [('keel-n%d' % i, 'http://127.0.0.1:%d/metrics' % (7200 + i)) for i in (1, 2, 3)]
    with open(d + '/services.json') as f:
        svcs = json.load(f)
    for s in svcs if isinstance(svcs, list) else svcs.get('services', []):
        name = '%s-%s' % (s['service'], s['instance'])
        if s['service'] == 'gateway':
            out.append((name, 'http://127.0.0.1:8001/metrics'))
        else:
            out.append((name, 'http://127.0.0.1:%d/metrics' % s['port']))
    return out


def scrape(url):
    """{(name, labels-without-le): {"le": {bound: cum}, "sum": s, "count": n}}"""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            text = r.read().decode()
    except OSError:
        return {}
    h = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or '', m.group(3)
        for suffix in ('_bucket', '_sum', '_count'):
            if name.endswith(suffix):
                base = name[:-len(suffix)]
                break
        else:
            continue
        le = None
        if suffix == '_bucket':
            parts = [p for p in re.findall(r'[a-z_]+="[^"]*"', labels)]
            le = [p for p in parts if p.startswith('le=')][0][4:-1]
            labels = ','.join(p for p in parts if not p.startswith('le='))
        e = h.setdefault('%s{%s}' % (base, labels), {'le': {}, 'sum': 0.0, 'count': 0})
        if suffix == '_bucket':
            e['le'][le] = float(value)
        elif suffix == '_sum':
            e['sum'] = float(value)
        else:
            e['count'] = float(value)
    return h


def quantile(bounds, counts, q):
    """bounds ascending (last is inf), counts per bucket (not cumulative)."""
    total = sum(counts)
    if total == 0:
        return 0.0
    want, seen, lo = q * total, 0.0, 0.0
    for b, c in zip(bounds, counts):
        if c > 0 and seen + c >= want:
            if b == float('inf'):
                return lo
            return lo + (b - lo) * (want - seen) / c
        seen += c
        lo = b if b != float('inf') else lo
    return lo


def report(a, b):
    rows = []
    for proc, series in b.items():
        for key, e in series.items():
            if any(s in key for s in SKIP):
                continue
            was = a.get(proc, {}).get(key, {'le': {}, 'sum': 0.0, 'count': 0})
            n = e['count'] - was['count']
            if n <= 0:
                continue
            bounds = sorted(e['le'], key=lambda x: float(x))
            cum = [e['le'][x] - was['le'].get(x, 0.0) for x in bounds]
            per = [c - p for c, p in zip(cum, [0.0] + cum[:-1])]
            fb = [float(x) for x in bounds]
            mean = (e['sum'] - was['sum']) / n
            rows.append((proc, key, n, mean, quantile(fb, per, .5), quantile(fb, per, .9),
                         quantile(fb, per, .99)))
    rows.sort(key=lambda r: (r[1], r[0]))
    print('%-14s %-86s %8s %8s %8s %8s %8s' % ('process', 'series (_seconds in ms)', 'count',
                                              'mean', 'p50', 'p90', 'p99'))
    for proc, key, n, mean, p50, p90, p99 in rows:
        k = 1e3 if key.split('{')[0].endswith('_seconds') else 1  # counts stay counts
        print('%-14s %-86s %8d %8.2f %8.2f %8.2f %8.2f' % (proc, key[:86], n, mean * k, p50 * k,
                                                         p90 * k, p99 * k))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == 'snap':
        snap = {p: scrape(u) for p, u in endpoints(sys.argv[2])}
        with open(sys.argv[3], 'w') as f:
            json.dump(snap, f)
    elif len(sys.argv) == 4 and sys.argv[1] == 'report':
        with open(sys.argv[2]) as f:
            a = json.load(f)
        with open(sys.argv[3]) as f:
            b = json.load(f)
        report(a, b)
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
