"""Lists of incidents compare as multisets: the order a tracer reported them in does not count."""

from __future__ import annotations

import copy

from tests.integration import incident_dump
from tests.vm.test_compare import comparable, differences

from .test_incident_dump import incident, run


def killed(pid=900, port=8001, cport=40000):
    inc = incident(pid=pid, port=port, cport=cport, reason=None)
    inc.update(kind="process-killed", ended_with="FIN", bytes_discarded=0, victim=None)
    inc["culprit"]["signal"] = 9
    return inc


def reset(pid=812, cpid=4242, port=8000, cport=51234):
    return incident(pid=pid, cpid=cpid, port=port, cport=cport)


def test_two_orders_of_the_same_incidents_compare_equal():
    a = [killed(), reset(), reset(pid=813, cpid=4243, port=8002, cport=51235)]
    b = [a[2], a[0], a[1]]
    # By position they differ, and so do the placeholders numbered by first appearance.
    assert incident_dump.normalise(a) != incident_dump.normalise(b)
    assert incident_dump.same_incidents(a, b)
    assert incident_dump.canonical(incident_dump.normalise(a)) == incident_dump.canonical(incident_dump.normalise(b))


def test_the_cross_kernel_comparison_ignores_order():
    host = run([killed(), reset()], kernel="6.18.44")
    guest = run([reset(pid=5, cpid=6, port=7, cport=8), killed(pid=9, port=10, cport=11)], kernel="6.12.0")
    assert differences(comparable(host, guest)[0], comparable(guest, host)[0]) == []


def test_a_genuinely_different_list_does_not_compare_equal():
    a = [killed(), reset()]
    other_fate = copy.deepcopy(a)
    other_fate[1]["victim"]["sigpipe"] = "none"
    assert not incident_dump.same_incidents(a, [other_fate[1], other_fate[0]])
    # One missing, one extra, one counted twice: a multiset, not a set.
    assert not incident_dump.same_incidents(a, a[:1])
    assert not incident_dump.same_incidents(a, a + [reset(pid=1, cpid=2)])
    assert not incident_dump.same_incidents(a + [a[1]], a + [a[0]])
    host, guest = run(a), run([other_fate[1], other_fate[0]])
    diffs = differences(comparable(host, guest)[0], comparable(guest, host)[0])
    assert diffs == ["[1].victim.sigpipe: host 'killed', guest 'none'"]


def test_how_values_relate_still_counts():
    # Two resets alike but for who is whom: swapping them is the same story...
    a = [reset(pid=1, cpid=2, port=10, cport=20), reset(pid=3, cpid=4, port=30, cport=40)]
    assert incident_dump.same_incidents(a, a[::-1])
    # ...but one process as both culprits is not two processes.
    b = copy.deepcopy(a)
    b[1]["culprit"]["pid"] = 1
    assert not incident_dump.same_incidents(a, b)
    # Nor is a victim whose errors are another process's.
    c = copy.deepcopy(a)
    c[0]["victim"]["errors"][0]["pid"] = 4
    assert not incident_dump.same_incidents(a, c)
