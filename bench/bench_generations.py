"""The same guest on both hypervisors (the host's libvirt 9 / QEMU 7.2 and the second hypervisor's
libvirt 11 / QEMU 10, scripts/hypervisor2.sh): its `virsh domstats --raw` keys compared, and the QEMU
monitor commands libvirtd sends per bulk stats group, counted with strace on each libvirtd.

    .venv/bin/python bench/bench_generations.py [--calls 5]

Prints Markdown: the keys only one generation has (indexes folded to N), then per group the monitor
commands per call per running domain. Needs root (strace) and the second hypervisor up. Not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import testbed as tb  # noqa: E402

GROUPS = ("state", "cpu-total", "balloon", "vcpu", "interface", "block", "iothread", "perf", "memory",
          "dirtyrate")
# the exporter's default groups in one call, as its bulk call asks them (with the backing chain)
DEFAULT = "state+cpu-total+balloon+vcpu+interface+block"
EXECUTE = re.compile(r'\{"execute":"([a-z0-9-]+)"')
PEER = re.compile(r"<UNIX-STREAM:\[\d+->(\d+)\]>")


def qemu_sockets(name: str) -> Set[str]:
    """Socket inodes of the QEMU process running domain ``name`` (either hypervisor's: one pid space)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if b"guest=%s," % name.encode() not in Path("/proc/%s/cmdline" % pid).read_bytes():
                continue
            links = [os.readlink("/proc/%s/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%s/fd" % pid)]
        except OSError:
            continue
        return {link[8:-1] for link in links if link.startswith("socket:[")}
    raise SystemExit("no QEMU process for " + name)


def virsh(uri: str, *args: str) -> str:
    return subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, check=True,
                          timeout=120).stdout


def folded_keys(uri: str, name: str) -> Set[str]:
    stats = tb.parse_domstats(virsh(uri, "domstats", "--raw", name))[name]
    return {re.sub(r"\.\d+\.", ".N.", key) for key in stats}


def libvirtd_pid(uri: str) -> int:
    """The pid of the libvirtd answering ``uri``: the host's from its pid file, the container's by
    its command line (`libvirtd -l`, the only one listening on TCP)."""
    if uri == tb.URI:
        return int(Path("/run/libvirtd.pid").read_text())
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path("/proc/%s/cmdline" % pid).read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd[:2] == [b"/usr/sbin/libvirtd", b"-l"]:
                return int(pid)
    raise SystemExit("no `libvirtd -l` process: is the second hypervisor up?")


def traced(uri: str, name: str, action) -> Dict[str, int]:
    """QMP commands libvirtd writes to this domain's QEMU while ``action()`` runs."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as out:
        argv = ["strace", "-f", "-qq", "-yy", "-s", "200", "-e", "trace=write,sendmsg", "-o", out.name,
                "-p", str(libvirtd_pid(uri))]
        tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached to every thread
        action()
        tracer.terminate()
        tracer.wait(10)
        lines = Path(out.name).read_text(errors="replace").replace('\\"', '"').splitlines()
    # only what went to this domain's QEMU: -yy names each write's socket as [ours->peer], and the
    # peer is one of that QEMU's sockets
    peers = qemu_sockets(name)
    ours = "\n".join(line for line in lines if (m := PEER.search(line)) and m.group(1) in peers)
    return collections.Counter(EXECUTE.findall(ours))


def monitor_commands(uri: str, name: str, group: str, calls: int) -> Dict[str, float]:
    """QMP commands per `virsh domstats --<group>` of one domain. libvirtd serves other clients too
    (on a shared host, other exporters read every domain): the same time without our calls is traced
    as well, and its commands are taken off."""
    took: List[float] = []

    def ours() -> None:
        started = time.monotonic()
        for _ in range(calls):
            virsh(uri, "domstats", *["--" + g for g in group.split("+")],
                  *(["--backing"] if "+" in group else []), name)
        took.append(time.monotonic() - started)

    with_calls = traced(uri, name, ours)
    without = traced(uri, name, lambda: time.sleep(took[0]))
    return {cmd: max(0.0, (n - without.get(cmd, 0)) / calls) for cmd, n in sorted(with_calls.items())
            if n - without.get(cmd, 0) > 0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=5)
    a = p.parse_args()
    other = subprocess.run(["bash", str(REPO / "scripts/hypervisor2.sh"), "uri"], capture_output=True, text=True,
                           check=True).stdout.strip()
    uris = {"libvirt 9 / QEMU 7.2": tb.URI, "libvirt 11 / QEMU 10": other}
    bed = tb.Testbed()
    try:
        guest = bed.make_guest("busy", start=False)
        keys: Dict[str, Set[str]] = {}
        trips: Dict[str, Dict[str, Dict[str, float]]] = {}
        for label, uri in uris.items():
            if uri == tb.URI:
                virsh(uri, "start", guest.name)
            else:
                virsh(uri, "create", str(guest.directory / "domain.xml"))
            time.sleep(8)  # through the firmware: every group has its counters
            keys[label] = folded_keys(uri, guest.name)
            trips[label] = {g: monitor_commands(uri, guest.name, g, a.calls) for g in GROUPS + (DEFAULT,)}
            virsh(uri, "destroy", guest.name)
        (old, new) = uris
        print("### keys only in %s\n" % old)
        print("\n".join("- `%s`" % k for k in sorted(keys[old] - keys[new])) or "(none)")
        print("\n### keys only in %s\n" % new)
        print("\n".join("- `%s`" % k for k in sorted(keys[new] - keys[old])) or "(none)")
        print("\n### QEMU monitor commands per call, one running domain\n")
        print("| group | %s | %s |" % (old, new))
        print("|---|---|---|")
        for g in GROUPS + (DEFAULT,):
            cells = []
            for label in uris:
                t = trips[label][g]
                cells.append("%.1f: %s" % (sum(t.values()), ", ".join("`%s` %.1f" % kv for kv in t.items()))
                             if t else "0")
            print("| %s | %s | %s |" % (g, cells[0], cells[1]))
    finally:
        bed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
