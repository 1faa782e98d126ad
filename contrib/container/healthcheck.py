#!/usr/bin/env python3
"""The container's health probe: does the exporter answer on its listen address?

It finds the exporter in its own container (the process in the same mount namespace whose program
is virt-exporter; --pid=host shows every host process) and follows its flags: the port of
--web.listen-address, https when --web.config.file turns TLS on. VIRT_EXPORTER_HEALTH_URL, when set,
is asked instead.

Healthy: 200 from /-/healthy, or, when the web config turns basic auth on, the exporter's own 401
(its realm) or 429 (its rate limit). /-/healthy proves no more than that the exporter's HTTP server
answers, and so do those: the probe needs no password (a password in the container's environment
would show in `podman inspect`) and no second, unauthenticated listener. The certificate is not
verified: it names the host that Prometheus scrapes, not the loopback address, and the probe checks
liveness, not identity. A web config that requires client certificates fails the handshake: probe
with your own command there.
"""

import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import List, Optional

import yaml

DEFAULT_LISTEN = ":9177"
TIMEOUT_S = 4
OWN_REALM = 'Basic realm="virt_exporter"'


def exporter_process() -> Optional[int]:
    """The pid of the exporter in this container (this mount namespace), if any."""
    own = os.readlink("/proc/self/ns/mnt")
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.readlink("/proc/%s/ns/mnt" % entry) != own:
                continue
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")[:2]
        except OSError:
            continue  # another user's process, or gone
        if any(a.endswith(b"/virt-exporter") for a in argv):
            return int(entry)
    return None


def flag(args: List[str], name: str) -> Optional[str]:
    """The value argparse would take for ``name`` (the last one given)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def health_url(pid: int) -> str:
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        args = [a.decode(errors="replace") for a in f.read().split(b"\0")]
    host, _, port = (flag(args, "--web.listen-address") or DEFAULT_LISTEN).rpartition(":")
    host = host.strip("[]")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    scheme = "http"
    config_file = flag(args, "--web.config.file")
    if config_file:
        # relative to the exporter's working directory, as the exporter reads it
        with open(os.path.join("/proc/%d/cwd" % pid, config_file)) as f:
            config = yaml.safe_load(f) or {}
        if config.get("tls_server_config"):
            scheme = "https"
    return "%s://%s:%s/-/healthy" % (scheme, "[%s]" % host if ":" in host else host, port)


def probe(url: str) -> str:
    """'' when healthy, else why not (one line)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            return "" if response.status == 200 else "%s: HTTP %d" % (url, response.status)
    except urllib.error.HTTPError as e:
        if e.code == 401 and e.headers.get("WWW-Authenticate") == OWN_REALM:
            return ""
        if e.code == 429:
            return ""
        return "%s: HTTP %d" % (url, e.code)
    except (OSError, ssl.SSLError) as e:
        return "%s: %s" % (url, e)


def main() -> int:
    url = os.environ.get("VIRT_EXPORTER_HEALTH_URL")
    if not url:
        pid = exporter_process()
        if pid is None:
            print("unhealthy: no virt-exporter process in this container")
            return 1
        try:
            url = health_url(pid)
        except (OSError, yaml.YAMLError) as e:
            print("unhealthy: reading the exporter's flags or web config: %s" % e)
            return 1
    why = probe(url)
    if why:
        print("unhealthy:", why)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
