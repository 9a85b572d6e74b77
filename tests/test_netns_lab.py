"""The lab itself: namespaces joined by a veth pair reach each other, and teardown leaves nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.netns import lab, wait_for


@pytest.mark.system
def test_two_namespaces_ping_and_teardown_removes_everything(tmp_path: Path) -> None:
    with lab(tmp_path) as the_lab:
        a, b = the_lab.netns("a"), the_lab.netns("b")
        the_lab.veth(a, "va", b, "vb")
        the_lab.addr(a, "va", "10.9.0.1/24")
        the_lab.addr(b, "vb", "10.9.0.2/24")
        wait_for(
            lambda: the_lab.sh(a, "ping", "-c1", "-W1", "10.9.0.2", check=False).returncode == 0,
            10,
            "ping across the veth pair",
        )
        sleeper = the_lab.start("sleeper", ["sleep", "300"], ns=a)
        names = [a, b]
    assert not sleeper.alive()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)
    assert not any(Path("/etc/netns", n).exists() for n in names)
