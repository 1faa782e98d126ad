"""The guest commands of scripts/testbed.sh: the demo guests (demo-busy, demo-idle, demo-blank), the
removal of test guests whose owning process is gone, and a status line per guest owner. Guests are
made by tests/testbed.py's library; this runs with Debian's /usr/bin/python3 (standard library only).

    python3 scripts/testbed_guests.py demo-up | demo-down | demo-names | gc | status
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import testbed as tb  # noqa: E402

USAGE = "usage: testbed_guests.py demo-up|demo-down|demo-names|gc|status"



def demo_up() -> list[tb.Guest]:
    """Define and start demo-busy, demo-idle, demo-blank; leaves running ones as they are."""
    out = []
    for name, (kind, vcpus, tap) in tb.DEMO_GUESTS.items():
        directory = tb.IMAGE_DIR / name
        if tb.domain_exists(name):
            if not tb.domain_active(name):
                tb.virsh("start", name)
                print(f"{name}: started")
            else:
                print(f"{name}: running")
            continue
        shutil.rmtree(directory, ignore_errors=True)  # a half-made earlier attempt
        directory.mkdir(parents=True)
        out.append(tb.create_guest(name, kind, directory, vcpus=vcpus, tap=tap))
        print(f"{name}: defined and started ({tb.domain_type()})")
    return out


def demo_down() -> None:
    for name in tb.DEMO_GUESTS:
        if tb.domain_active(name):
            tb.virsh("destroy", name)
        if tb.domain_exists(name):
            tb.virsh("undefine", name)
        shutil.rmtree(tb.IMAGE_DIR / name, ignore_errors=True)
        # libvirt's log of the guest, which it keeps after undefine
        Path(f"/var/log/libvirt/qemu/{name}.log").unlink(missing_ok=True)
        print(f"{name}: removed")


def status() -> None:
    names = tb.domain_names()
    demo = [n for n in names if n in tb.DEMO_GUESTS]
    owners: dict[int, list[str]] = {}
    for n in names:
        pid = tb.owner_of(n)
        if pid is not None:
            owners.setdefault(pid, []).append(n)
    for n in demo:
        print(f"{n}: {tb.virsh('domstate', n).strip()}")
    for pid, ns in sorted(owners.items()):
        state = "alive" if tb.owner_alive(pid) else "dead (run gc)"
        print(f"test guests of pid {pid} ({state}): {len(ns)}")
    if not demo and not owners:
        print("no demo or test guests")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("demo-up", "demo-down", "demo-names", "gc", "status"):
        print(USAGE, file=sys.stderr)
        return 2
    cmd = argv[0]
    if cmd == "demo-names":
        print("\n".join(tb.DEMO_GUESTS))
    elif cmd == "demo-up":
        demo_up()
    elif cmd == "demo-down":
        demo_down()
    elif cmd == "gc":
        for n in tb.gc():
            print(f"removed {n}")
    else:
        status()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
