"""The test lanes: the ``prefect`` marker follows the harness, so ``make test-quick``
(``-m "not prefect"``) never starts a Prefect server and no flow test is forgotten in it."""

from pathlib import Path
from types import SimpleNamespace

from tests.conftest import FLOW_TESTS, needs_prefect

HERE = Path(__file__).resolve().parent


def item(path: Path, *fixtures: str) -> SimpleNamespace:
    return SimpleNamespace(path=path, fixturenames=["request", "tmp_path", *fixtures])


def test_the_harness_fixture_or_the_flows_folder_makes_a_prefect_test():
    assert needs_prefect(item(HERE / "reporting" / "test_x.py", "prefect_server"))
    assert needs_prefect(item(FLOW_TESTS / "test_schedules.py"))  # a server of its own, no fixture
    assert needs_prefect(item(FLOW_TESTS / "sub" / "test_y.py"))
    assert not needs_prefect(item(HERE / "lab" / "test_calling.py", "called", "cfg"))
    assert not needs_prefect(item(HERE / "flows_like" / "test_z.py"))


def test_every_collected_harness_test_carries_the_marker(request):
    """Over whatever this session collected (the whole suite under ``make test``)."""
    unmarked = [i.nodeid for i in request.session.items
                if "prefect_server" in getattr(i, "fixturenames", ()) and i.get_closest_marker("prefect") is None]
    assert unmarked == []
    assert request.node.get_closest_marker("prefect") is None  # this test is in the quick lane
