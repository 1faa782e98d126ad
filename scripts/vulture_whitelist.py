"""Names vulture (the dead-code check in scripts/lint.sh) cannot see used: hooks the standard library
calls by name, keyword arguments kept for client_python's signatures, and what only the tests read."""

from virt_exporter import exposition, sampler, server
from virt_exporter.sample import NetDevCounters
from virt_exporter.source import connection, stuck
from virt_exporter.webconfig import WebConfig

# http.server / socketserver call these by name
server.ExporterHTTPServer.daemon_threads
server.ExporterHTTPServer.request_queue_size
server.ExporterHTTPServer.handle_error
server.ExporterRequestHandler.server_version
server.ExporterRequestHandler.protocol_version
server.ExporterRequestHandler.disable_nagle_algorithm
server.ExporterRequestHandler.log_message
server.ExporterRequestHandler.do_HEAD
server.ExporterRequestHandler.request_version
server.ExporterRequestHandler.requestline
server.ExporterRequestHandler.close_connection

# client_python's add_metric(labels, value, timestamp=None): callers may pass it by name
exposition.FastFamily.add_metric.timestamp

# read by the tests (byte-for-byte and promtool comparisons, sampler and connection state)
exposition.render
sampler.Sampler.samples_total
connection.Connection.tainted_lanes
stuck.StuckAwareStats.suspects
WebConfig.auth_required
NetDevCounters.rx_packets
NetDevCounters.tx_packets

# the snapshot's time of the last step
from virt_exporter.perfmon.engine import EngineSnapshot  # noqa: E402

EngineSnapshot.last_step_s
