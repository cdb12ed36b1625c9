"""Which of a command's marked processes a start adopts, and which it ends."""

from __future__ import annotations

from plumbing.orphans import Marked, choose

HERE = (1, 100)  # the command's namespace
GONE = (1, 99)  # a namespace that was deleted and made again under the same name


def test_the_leader_in_the_commands_namespace_is_adopted_with_its_group():
    leader, child = Marked(10, 10, 500, HERE), Marked(11, 10, 501, HERE)
    assert choose([leader, child], HERE) == (leader, [])


def test_a_copy_in_a_namespace_made_again_is_ended_not_adopted():
    stale, child = Marked(10, 10, 500, GONE), Marked(11, 10, 501, GONE)
    assert choose([stale, child], HERE) == (None, [10, 11])


def test_children_of_a_dead_leader_are_ended():
    assert choose([Marked(11, 10, 501, HERE), Marked(12, 10, 502, HERE)], HERE) == \
        (None, [11, 12])


def test_of_two_leaders_the_newest_is_kept_and_the_other_group_ended():
    old, new = Marked(10, 10, 500, HERE), Marked(20, 20, 900, HERE)
    old_child = Marked(21, 10, 901, HERE)
    assert choose([old, new, old_child], HERE) == (new, [10, 21])


def test_nothing_is_adopted_when_the_namespace_is_missing():
    assert choose([Marked(10, 10, 500, HERE)], None) == (None, [10])
