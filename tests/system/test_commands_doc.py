"""test_commands_doc.py - docs/commands.md is the command table as it is now (issue 19).

The page is generated (tests/system/commands_doc.py) from a running keel node's COMMAND and
COMMAND DOCS and a real redis-server 7.0's COMMAND. A command added, removed or changed
without regenerating the page fails here, so the page cannot drift from the table.
"""

import os

from commands_doc import ROOT, collect, render, stated_differences
from keelcluster import make_cluster, redis_server  # noqa: F401 (fixtures)


def test_commands_page_matches_the_table(make_cluster, redis_server):  # noqa: F811
    cl = make_cluster(1)
    page = render(
        collect(cl.nodes[0].client_port),
        collect(redis_server.port, docs=False),
        stated_differences(),
    )
    path = os.path.join(ROOT, "docs", "commands.md")
    with open(path, encoding="utf-8") as f:
        have = f.read()
    assert have == page, (
        "docs/commands.md is stale: run "
        "/usr/bin/python3 tests/system/commands_doc.py --keel build/keel"
    )


def test_every_keel_row_has_a_summary(make_cluster):  # noqa: F811
    cl = make_cluster(1)
    table = collect(cl.nodes[0].client_port)
    assert len(table) > 90
    assert not [n for n, r in table.items() if not r["summary"]]
