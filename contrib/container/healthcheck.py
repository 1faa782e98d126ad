#!/usr/bin/python3
"""The container's health probe: does the exporter answer on its listen address?

VIRT_EXPORTER_HEALTH_URL (default http://127.0.0.1:9177/-/healthy) says where; https:// when the
web config turns TLS on. Healthy: 200 from /-/healthy, or, when the web config turns basic auth on,
the exporter's own 401 (its realm) or 429 (its rate limit). /-/healthy proves no more than that the
exporter's HTTP server answers, and so do those: the probe needs no password (a password in the
container's environment would show in `podman inspect`) and no second, unauthenticated listener.
The certificate is not verified: it names the host that Prometheus scrapes, not 127.0.0.1, and the
probe checks liveness, not identity. A web config that requires client certificates fails the
handshake: probe with your own command there.
"""

import os
import ssl
import sys
import urllib.error
import urllib.request

URL = os.environ.get("VIRT_EXPORTER_HEALTH_URL", "http://127.0.0.1:9177/-/healthy")
TIMEOUT_S = 4
OWN_REALM = 'Basic realm="virt_exporter"'


def probe(url: str) -> str:
    """'' when healthy, else why not (one line)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            return "" if response.status == 200 else "HTTP %d" % response.status
    except urllib.error.HTTPError as e:
        if e.code == 401 and e.headers.get("WWW-Authenticate") == OWN_REALM:
            return ""
        if e.code == 429:
            return ""
        return "HTTP %d" % e.code
    except (OSError, ssl.SSLError) as e:
        return "%s: %s" % (url, e)


def main() -> int:
    why = probe(URL)
    if why:
        print("unhealthy:", why)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
