"""Reference model: XenServer perfmon (``seeds/002_*.txt``), transliterated to Python 3.

The classes and functions below are the seed's, statement for statement, in Python 3 spelling only
(``except X as e``, ``in`` for ``has_key``, lists where Python 2's ``filter`` / ``map`` / ``keys``
gave lists), parsing with minidom as the seed does. Nothing here knows virt_exporter: the engine is
compared with this, never with itself. Where the two are meant to differ, the tests say so and show
the difference (docs/perfmon.md, "Where this engine differs from perfmon").

The seed's globals and its I/O live on a harness object, ``Perfmon``. These are the only changes,
each marked ``# harness:`` where it is made:

- the clock: ``time.time()`` reads ``perfmon.now``, which the test sets before each run;
- the globals ``rrd_step``, ``all_xmlconfigs`` and ``main()``'s loop variables are its attributes;
- XAPI: ``message.create`` appends to ``perfmon.alarms`` (the alarm body, a message text, is not
  kept); the attempts auto-inhibit drops, which the seed drops silently, are appended too, marked
  unsent; ``update_all_xmlconfigs`` reads ``perfmon.other_config`` (uuid → the ``perfmon`` key);
  ``log_err`` appends to ``perfmon.errors``;
- ``int()`` and ``float()`` are Python 2's: no ``_`` between digits (Python 3 takes ``1_000``);
- ``get_percent_fs_usage`` returns ``perfmon.fs_usage()`` instead of parsing ``df /etc/passwd``, and
  ``eval(consolidation_fn)`` looks the name up among the same four functions;
- rrd_updates: a test builds the page with ``rrd_updates(...)`` (one row per run, or a batch)
  instead of fetching and SAX-parsing it, with the data sources in name order where the seed had
  its Python 2 dict's hash order;
- ``main()``'s loop body is ``Perfmon.run_once``, without the XAPI session, the sleep and the
  command socket; the socket's ``refresh`` command is ``Perfmon.refresh()``. Exceptions leave
  ``run_once`` as they leave the seed's loop: ``average([])`` ends perfmon.
"""

from __future__ import annotations

import re
from xml.dom import minidom
from xml.parsers.expat import ExpatError


class PerfMonException(Exception):
    pass


class XmlConfigException(PerfMonException):
    pass


class ObjectReport:
    def __init__(self, objtype, uuid):
        self.objtype = objtype  # a string like "vm", or "host" taken from an <entry> tag
        self.uuid = uuid  # the object's uuid
        self.vars = {}  # maps rrd variable name to array of floats

    def get_uuid(self):
        return self.uuid

    def get_var_names(self):
        return list(self.vars.keys())

    def get_value(self, var_name, row):
        try:
            return (self.vars[var_name])[row]
        except:  # noqa: E722 - the seed's own bare except: anything missing reads 0.0
            return 0.0

    def insert_value(self, var_name, index, value):
        if var_name not in self.vars:
            self.vars[var_name] = []
        self.vars[var_name].insert(index, value)


class RRDReport:
    "This is just a data structure passed that is completed by RRDContentHandler"

    def __init__(self):
        self.reset()

    def reset(self):
        self.columns = 0  # num xapi vars in xml
        self.rows = 0  # num samples in xml
        self.start_time = 0  # timestamp of 1st sample in xml
        self.end_time = 0  # timestamp of last sample in xml
        self.step_time = 0  # seconds between each pair of samples
        self.obj_reports = {}  # maps uuids to ObjectReports, built from xml


class RRDUpdates:
    def __init__(self):
        self.report = RRDReport()  # harness: filled by rrd_updates(), not by refresh()'s HTTP + SAX

    def get_num_rows(self):
        "Return the number of samples of each parameter"
        return self.report.rows

    def get_obj_report_by_uuid(self, uuid):
        "Return an ObjectReport for the object with this uuid"
        try:
            return self.report.obj_reports[uuid]
        except:  # noqa: E722 - the seed's
            return None

    def get_uuid_list_by_objtype(self, objtype):
        "Return a list of uuids corresonding to the objects of this type for which we have ObjectReports"
        return [objrep.uuid
                for objrep in self.report.obj_reports.values()
                if objrep.objtype == objtype]


def rrd_updates(objects, num_rows=1):
    """harness: the page RRDContentHandler would build. ``objects`` maps (objtype, uuid) to a list
    of ``num_rows`` rows, oldest first, each a dict data source → value. A source absent from a row
    (or None) has no value there: it may be missing only from the end of its column, since a page's
    columns are filled row by row and ``get_value`` then reads 0.0 past a column's end.

    The columns are in name order. The seed's order was its Python 2 dict's (hash order), which
    matters only to ``max`` over a NaN: Python's max keeps a NaN only when it comes first."""
    updates = RRDUpdates()
    updates.report.rows = num_rows
    for (objtype, uuid), rows in objects.items():
        assert len(rows) == num_rows, (uuid, len(rows), num_rows)
        obj_report = updates.report.obj_reports[uuid] = ObjectReport(objtype, uuid)
        names = []
        for row in rows:
            names += [n for n in row if n not in names]
        for name in sorted(names):  # harness: see rrd_updates' docstring
            column = [row.get(name) for row in rows]
            present = [v for v in column if v is not None]
            assert column[:len(present)] == present, (name, "values may be missing only at the end")
            obj_report.vars[name] = present
    return updates


def int(s, _int=int):  # noqa: A001 - harness: Python 2's int(), which refused "1_000"
    if isinstance(s, str) and "_" in s:
        raise ValueError("invalid literal for int() with base 10: %r" % s)
    return _int(s)


def float(s, _float=float):  # noqa: A001 - harness: Python 2's float(), which refused "1_0.5"
    if isinstance(s, str) and "_" in s:
        raise ValueError("could not convert string to float: %r" % s)
    return _float(s)


# Consolidation functions:
supported_consolidation_functions = ['sum', 'average', 'max', 'get_percent_fs_usage']


def average(mylist):
    return sum(mylist) / float(len(mylist))


def get_percent_fs_usage_for(perfmon):
    def get_percent_fs_usage(ignored):
        "Get the percent usage of the host filesystem. Input list is ignored and should be empty"
        return perfmon.fs_usage()  # harness: instead of parsing `df /etc/passwd`
    return get_percent_fs_usage


class VariableConfig:
    def __init__(self, perfmon, xmldoc, alarm_create_callback, get_default_variable_config):
        try: name = xmldoc.getElementsByTagName('name')[0].getAttribute('value')
        except IndexError: raise XmlConfigException("variable missing 'name' tag")

        def get_value(tag):
            try:
                return xmldoc.getElementsByTagName(tag)[0].getAttribute('value')
            except:  # noqa: E722 - the seed's
                return get_default_variable_config(name, tag)
        rrd_regex = get_value('rrd_regex')
        consolidation_fn = get_value('consolidation_fn')
        alarm_trigger_level = get_value('alarm_trigger_level')
        alarm_trigger_period = get_value('alarm_trigger_period')
        alarm_auto_inhibit_period = get_value('alarm_auto_inhibit_period')
        alarm_trigger_sense = get_value('alarm_trigger_sense')
        alarm_priority = get_value('alarm_priority')

        # Save xmldoc: we need this when creating the body of the alarms
        self.xmldoc = xmldoc
        self.name = name
        try:
            self.rrd_regex = re.compile(rrd_regex)
        except:  # noqa: E722 - the seed's
            raise XmlConfigException("variable %s: regex %s does not compile" % (name, rrd_regex))
        if consolidation_fn not in supported_consolidation_functions:
            raise XmlConfigException("variable %s: consolidation function %s not supported"
                                     % (name, consolidation_fn))
        # harness: eval(consolidation_fn), over the same four functions
        self.consolidation_fn = {'sum': sum, 'average': average, 'max': max,
                                 'get_percent_fs_usage': get_percent_fs_usage_for(perfmon)}[consolidation_fn]
        try:
            self.alarm_trigger_period = int(alarm_trigger_period)
        except:  # noqa: E722 - the seed's
            raise XmlConfigException("variable %s: alarm_trigger_level %s not an int" %
                                     (name, alarm_trigger_period))
        try:
            self.alarm_auto_inhibit_period = int(alarm_auto_inhibit_period)
        except:  # noqa: E722 - the seed's
            raise XmlConfigException("variable %s: alarm_auto_inhibit_period %s not an int" %
                                     (name, alarm_auto_inhibit_period))
        try:
            trigger_level = float(alarm_trigger_level)
        except:  # noqa: E722 - the seed's
            raise XmlConfigException("variable %s: alarm_trigger_level %s not a float" %
                                     (name, alarm_trigger_level))
        self.alarm_priority = alarm_priority
        if alarm_trigger_sense == "high":
            self.test_level = lambda: (self.value > trigger_level)
        else:
            self.test_level = lambda: (self.value < trigger_level)
        self.alarm_create_callback = alarm_create_callback


def variable_configs_differ(vc1, vc2):
    "Say whether configuration of one variable differs from that of another"
    return vc1.xmldoc.toxml() != vc2.xmldoc.toxml()


class VariableState:
    def __init__(self):
        self.value = None
        self.timeof_last_alarm = self.perfmon.now - self.alarm_auto_inhibit_period  # harness: time.time()
        self.trigger_down_counter = self.alarm_trigger_period


class Variable(VariableConfig, VariableState):
    def __init__(self, perfmon, *args):
        self.perfmon = perfmon  # harness: the clock, rrd_step and the alarm log
        VariableConfig.__init__(self, perfmon, *args)
        VariableState.__init__(self)

    def __generate_alarm(self, session):
        t = self.perfmon.now  # harness: time.time()
        delta = t - self.timeof_last_alarm
        if delta < self.alarm_auto_inhibit_period:
            # harness: keep the attempt the seed drops (alarm_create_callback is its monitor's method)
            self.perfmon.record(self.alarm_create_callback.__self__, self, t, sent=False)
            return  # we are in the auto inhibit period - do nothing
        self.timeof_last_alarm = t
        self.alarm_create_callback(self, session, t)  # harness: t instead of the message text

    def update(self, value, session):
        self.value = value
        if self.test_level():
            # level is bad
            self.trigger_down_counter -= self.perfmon.rrd_step  # harness: the global rrd_step
            if self.trigger_down_counter <= 0:
                self.__generate_alarm(session)
                # reset trigger counter
                self.trigger_down_counter = self.alarm_trigger_period
        else:
            # level good - reset trigger counter
            self.trigger_down_counter = self.alarm_trigger_period


class ObjectMonitor:
    def __init__(self, perfmon, uuid):
        self.perfmon = perfmon  # harness: the globals
        self.uuid = uuid
        self.xmlconfig = None
        # "variables" is the public attribute of interest
        self.variables = []
        self.refresh_config()

    def refresh_config(self):
        if self.__update_xmlconfig():
            # config has changed - reparse it
            try:
                self.__parse_xmlconfig()
            except XmlConfigException as e:
                errmsg = "\n".join([str(x) for x in e.args])
                self.perfmon.log_err("%s %s config error: %s" % (self.monitortype, self.uuid, errmsg))
            except ExpatError as e:
                errmsg = "\n".join([str(x) for x in e.args])
                self.perfmon.log_err("%s %s XML parse error: %s" % (self.monitortype, self.uuid, errmsg))

    def __update_xmlconfig(self):
        if self.uuid not in self.perfmon.all_xmlconfigs:
            xmlconfig = None
        else:
            xmlconfig = self.perfmon.all_xmlconfigs[self.uuid]
        if xmlconfig != self.xmlconfig:
            self.xmlconfig = xmlconfig
            return True

    def __parse_xmlconfig(self):
        if not self.xmlconfig:
            # Possible if this VM/host is not configured yet
            self.variables = []
            return
        xmldoc = minidom.parseString(self.xmlconfig)
        variable_nodes = xmldoc.getElementsByTagName('variable')
        variable_names = []
        for vn in variable_nodes:
            # create a variable using the config in vn
            var = Variable(self.perfmon, vn, self.alarm_create, self.get_default_variable_config)
            # Update list of variable names
            if var.name not in variable_names:
                variable_names.append(var.name)
            # build list of variables already present with same name
            vars_with_same_name = [v for v in self.variables if v.name == var.name]
            count = 0
            append_var = True
            for v in vars_with_same_name:
                # this list should be 0 or 1 long!
                if count > 0:
                    self.perfmon.log_err("programmer error: found duplicate variable %s (uuid %s)"
                                         % (var.name, self.uuid))
                    self.variables.remove(v)
                    continue
                count += 1
                # only replace variable in self.variables if its config has changed.
                # This way we don't reset its state
                if variable_configs_differ(var, v):
                    self.variables.remove(v)
                else:
                    append_var = False
            if append_var:
                self.variables.append(var)
        # Now delete any old variables that do not appear in the new variable_nodes
        variables_to_remove = [v for v in self.variables if v.name not in variable_names]
        for v in variables_to_remove:
            self.variables.remove(v)

    def process_rrd_updates(self, rrd_updates, session):
        obj_report = rrd_updates.get_obj_report_by_uuid(self.uuid)
        num_rows = rrd_updates.get_num_rows()
        if not obj_report:
            return
        params_in_obj_report = obj_report.get_var_names()
        for var in self.variables:
            # find the subset of the params returned for this object that we need to consolidate into var
            params_to_consolidate = list(filter(var.rrd_regex.search, params_in_obj_report))
            for row in range(num_rows):
                # Get the values to consolidate
                values_to_consolidate = [obj_report.get_value(param, row) for param in params_to_consolidate]
                # Consolidate them
                value = var.consolidation_fn(values_to_consolidate)
                # Pass result on to the variable object - this may result in an alarm being generated
                var.update(value, session)

    def alarm_create(self, var, session, t):
        "Callback used by Variable var to actually send an alarm"
        self.perfmon.record(self, var, t, sent=True)  # harness: message.create("ALARM", ...)


class VMMonitor(ObjectMonitor):
    def __init__(self, *args):
        self.monitortype = "VM"
        ObjectMonitor.__init__(self, *args)

    def get_default_variable_config(self, variable_name, config_tag):
        "This allows user to not specify full set of tags for each variable in xml config"
        if config_tag == 'consolidation_fn':
            if variable_name == "cpu_usage": return 'average'
            elif variable_name == "fs_usage": return 'get_percent_fs_usage'
            else: return 'sum'
        elif config_tag == 'rrd_regex':
            if variable_name == "cpu_usage": return "cpu[0-9]+"
            elif variable_name == "network_usage": return "vif_[0-9]+_[rt]x"
            elif variable_name == "disk_usage": return "vbd_(xvd|hd)[a-z]+_(read|write)"
            elif variable_name == "fs_usage": return "__DUMMY__"  # match nothing
            else: raise XmlConfigException("variable %s: no default rrd_regex - please specify one" % variable_name)
        elif config_tag == 'alarm_trigger_period': return '60'  # 1 minute
        elif config_tag == 'alarm_auto_inhibit_period':
            if variable_name == "fs_usage": return '604800'  # 1 week
            else: return '3600'  # 1 hour
        elif config_tag == 'alarm_trigger_level':
            if variable_name == "fs_usage": return '0.9'  # trigger when 90% full
            else: raise XmlConfigException("variable %s: no default alarm_trigger_level - please specify one"
                                           % variable_name)
        elif config_tag == 'alarm_trigger_sense': return 'high'  # trigger if *above*
        elif config_tag == 'alarm_priority': return '5'  # the minimum priority required for mail-alarm to send
        else: raise XmlConfigException("variable %s: no default available for tag %s" % (variable_name, config_tag))


class HOSTMonitor(ObjectMonitor):
    def __init__(self, *args):
        self.monitortype = "HOST"
        ObjectMonitor.__init__(self, *args)

    def get_default_variable_config(self, variable_name, config_tag):
        "This allows user to not specify full set of tags for each variable in xml config"
        if config_tag == 'consolidation_fn':
            if variable_name == "cpu_usage": return 'average'
            else: return 'sum'
        elif config_tag == 'rrd_regex':
            if variable_name == "cpu_usage": return "cpu[0-9]+"
            elif variable_name == "network_usage": return "pif_eth[0-9]+_[rt]x"
            else: raise XmlConfigException("variable %s: no default rrd_regex - please specify one" % variable_name)
        elif config_tag == 'alarm_trigger_period': return '60'  # 1 minute
        elif config_tag == 'alarm_auto_inhibit_period': return '3600'  # 1 hour
        elif config_tag == 'alarm_trigger_sense': return 'high'  # trigger if *above*
        elif config_tag == 'alarm_priority': return '5'  # the minimum priority required for mail-alarm to send
        else: raise XmlConfigException("variable %s: no default available for tag %s" % (variable_name, config_tag))


class Perfmon:
    """harness: the seed's globals, XAPI and clock, and ``main()``'s loop state.

    ``alarms`` collects (time_s, monitortype, uuid, variable, priority, value, sent).
    """

    def __init__(self, rrd_step=60, now=0.0, fs_usage=lambda: 0.0):
        self.rrd_step = rrd_step
        self.now = now
        self.fs_usage = fs_usage
        self.other_config = {}  # uuid → other-config:perfmon, as XAPI holds it
        self.all_xmlconfigs = {}
        self.alarms = []
        self.errors = []
        # main()'s loop variables
        self.config_update_period = 1800
        self.next_config_update = now
        self.vm_mon_lookup = {}
        self.host_mon = None

    def log_err(self, line):
        self.errors.append(line)

    def record(self, monitor, var, t, sent):
        self.alarms.append((t, monitor.monitortype, monitor.uuid, var.name, var.alarm_priority, var.value, sent))

    def refresh(self):
        "The command socket's ``refresh``: forces a re-read of all the configs on the next loop"
        self.next_config_update = self.now

    def update_all_xmlconfigs(self):
        self.all_xmlconfigs.clear()
        self.all_xmlconfigs.update([
            (uuid, xmlconfig)
            for (uuid, xmlconfig) in self.other_config.items()
            if xmlconfig is not None
        ])

    def run_once(self, rrd_updates):
        """One pass of the seed's ``while True`` in ``main()``, from after ``rrd_updates.refresh``
        to the sleep."""
        session = None
        # Should we update all_xmlconfigs
        if self.now >= self.next_config_update:
            self.update_all_xmlconfigs()
            self.next_config_update = self.now + self.config_update_period
        # List of VMs present in rrd_updates
        vm_uuid_list = rrd_updates.get_uuid_list_by_objtype('vm')
        # Remove any monitors for VMs no longer listed in rrd_updates page
        for uuid in list(self.vm_mon_lookup.keys()):
            if uuid not in vm_uuid_list:
                self.vm_mon_lookup.pop(uuid)
        # Create monitors for VMs that have just appeared in rrd_updates page
        for uuid in vm_uuid_list:
            if uuid not in self.vm_mon_lookup.keys():
                self.vm_mon_lookup[uuid] = VMMonitor(self, uuid)
            else:
                # check if the config has changed, e.g. by XenCenter
                self.vm_mon_lookup[uuid].refresh_config()
        try:
            host_uuid = rrd_updates.get_uuid_list_by_objtype('host')[0]  # should only ever be one of these
        except:  # noqa: E722 - the seed's
            # list may be empty!
            host_uuid = None
        if not host_uuid:
            self.host_mon = None
        elif not self.host_mon:
            self.host_mon = HOSTMonitor(self, host_uuid)
        elif self.host_mon.uuid != host_uuid:
            raise PerfMonException("host uuid in rrd_updates changed (old: %s, new %s)" %
                                   (self.host_mon.uuid, host_uuid))
        else:
            # check if the config has changed, e.g. by XenCenter
            self.host_mon.refresh_config()
        # Go through each vm_mon and update it using the rrd_udpates - this may generate alarms
        for vm_mon in self.vm_mon_lookup.values():
            vm_mon.process_rrd_updates(rrd_updates, session)
        # Ditto for the host_mon
        if self.host_mon:
            self.host_mon.process_rrd_updates(rrd_updates, session)
