"""Reading a process tree (repl/proctree.py): members, state, memory; no REPL, plain processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from kimina_grpc.repl import proctree
from kimina_grpc.repl.proctree import ProcessTree

from .helpers import eventually_sync

# A parent with two children, each asleep: a tree of three. The parent reaps a child that dies.
_FAMILY = """
import os, subprocess, sys, time
for _ in range(2):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(60)
"""


@contextlib.contextmanager
def family() -> Iterator[subprocess.Popen[bytes]]:
    parent = subprocess.Popen([sys.executable, "-c", _FAMILY], start_new_session=True)
    try:
        eventually_sync(lambda: len(proctree.tree_of(parent.pid)) == 3, what="both children started")
        yield parent
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_a_tree_is_its_root_and_every_descendant_and_the_leaf_is_the_deepest() -> None:
    with family() as parent:
        walked = proctree.tree_of(parent.pid)
        tree = ProcessTree(parent.pid)
        assert walked[0] == parent.pid and sorted(tree.pids()) == sorted(walked)
        kids = proctree.children(parent.pid)
        assert kids is not None and sorted(kids) == sorted(walked[1:])
        assert proctree.leaf(walked) in kids
        cpu, rss = tree.sample()
        assert cpu >= 0 and rss >= tree.rss() // 2 > 0  # three Pythons; rss walks afresh, sample the cached tree


def test_a_stopped_member_is_seen_and_a_gone_member_is_dropped() -> None:
    with family() as parent:
        tree = ProcessTree(parent.pid)
        child = tree.pids()[1]
        assert not tree.stopped()
        os.kill(child, signal.SIGSTOP)
        eventually_sync(tree.stopped, what="the stopped child is seen")
        os.kill(child, signal.SIGKILL)
        eventually_sync(lambda: child not in proctree.tree_of(parent.pid), what="the killed child is reaped")
        assert not proctree.is_stopped(child)
        tree.sample()  # a member is gone: the tree is looked up again next time
        assert child not in tree.pids()


def test_a_gone_process_has_no_children_and_no_tree() -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    pid = int(done.stdout)
    assert proctree.children(pid) is None and proctree.tree_of(pid) == []
    assert ProcessTree(pid).pids() == [] and ProcessTree(pid).rss() == 0
