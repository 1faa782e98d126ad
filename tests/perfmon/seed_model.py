"""Reference model: XenServer perfmon's VariableConfig / Variable / ObjectMonitor, transliterated from
the seed (``seeds/002_*.txt``) to Python 3 with minidom, as the seed parses.

Only what a test cannot do with the seed as written is changed, each marked ``# harness:``:
- time comes from ``clock()`` (the step's sample time) instead of ``time.time()``;
- ``rrd_step`` is an attribute instead of a global;
- alarms are recorded instead of sent through XAPI; inhibited attempts are recorded too;
- one consolidated row per step instead of an rrd_updates page.

It knows nothing of virt_exporter: the engine is checked against it, never against itself.
"""

from __future__ import annotations

import re
from xml.dom import minidom
from xml.parsers.expat import ExpatError

supported_consolidation_functions = ['sum', 'average', 'max', 'get_percent_fs_usage']


class XmlConfigException(Exception):
    pass


def average(mylist):
    return sum(mylist) / float(len(mylist))


def vm_default_variable_config(variable_name, config_tag):
    "VMMonitor.get_default_variable_config, verbatim"
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
        else: raise XmlConfigException("variable %s: no default alarm_trigger_level - please specify one" % variable_name)
    elif config_tag == 'alarm_trigger_sense': return 'high'  # trigger if *above*
    elif config_tag == 'alarm_priority': return '5'  # the minimum priority required for mail-alarm to send
    else: raise XmlConfigException("variable %s: no default available for tag %s" % (variable_name, config_tag))


def host_default_variable_config(variable_name, config_tag):
    "HOSTMonitor.get_default_variable_config, verbatim"
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


class VariableConfig:
    def __init__(self, xmldoc, alarm_create_callback, get_default_variable_config, fs_usage):
        try: name = xmldoc.getElementsByTagName('name')[0].getAttribute('value')
        except IndexError: raise XmlConfigException("variable missing 'name' tag")

        def get_value(tag):
            try:
                return xmldoc.getElementsByTagName(tag)[0].getAttribute('value')
            except Exception:
                return get_default_variable_config(name, tag)
        rrd_regex = get_value('rrd_regex')
        consolidation_fn = get_value('consolidation_fn')
        alarm_trigger_level = get_value('alarm_trigger_level')
        alarm_trigger_period = get_value('alarm_trigger_period')
        alarm_auto_inhibit_period = get_value('alarm_auto_inhibit_period')
        alarm_trigger_sense = get_value('alarm_trigger_sense')
        alarm_priority = get_value('alarm_priority')

        self.xmldoc = xmldoc
        self.name = name
        try:
            self.rrd_regex = re.compile(rrd_regex)
        except Exception:
            raise XmlConfigException("variable %s: regex %s does not compile" % (name, rrd_regex))
        if consolidation_fn not in supported_consolidation_functions:
            raise XmlConfigException("variable %s: consolidation function %s not supported" % (name, consolidation_fn))
        # harness: eval(consolidation_fn) resolved without eval; get_percent_fs_usage reads the harness's value
        self.consolidation_fn = {'sum': sum, 'average': average, 'max': max,
                                 'get_percent_fs_usage': lambda ignored: fs_usage()}[consolidation_fn]
        try:
            self.alarm_trigger_period = int(alarm_trigger_period)
        except Exception:
            raise XmlConfigException("variable %s: alarm_trigger_level %s not an int" % (name, alarm_trigger_period))
        try:
            self.alarm_auto_inhibit_period = int(alarm_auto_inhibit_period)
        except Exception:
            raise XmlConfigException("variable %s: alarm_auto_inhibit_period %s not an int" % (name, alarm_auto_inhibit_period))
        try:
            trigger_level = float(alarm_trigger_level)
        except Exception:
            raise XmlConfigException("variable %s: alarm_trigger_level %s not a float" % (name, alarm_trigger_level))
        self.alarm_priority = alarm_priority
        if alarm_trigger_sense == "high":
            self.test_level = lambda: (self.value > trigger_level)
        else:
            self.test_level = lambda: (self.value < trigger_level)
        self.alarm_create_callback = alarm_create_callback


def variable_configs_differ(vc1, vc2):
    return vc1.xmldoc.toxml() != vc2.xmldoc.toxml()


class Variable(VariableConfig):
    def __init__(self, model, *args):
        VariableConfig.__init__(self, *args)
        self.model = model  # harness: rrd_step and clock
        # VariableState.__init__
        self.value = None
        self.timeof_last_alarm = model.clock() - self.alarm_auto_inhibit_period
        self.trigger_down_counter = self.alarm_trigger_period

    def __generate_alarm(self, session):
        t = self.model.clock()
        delta = t - self.timeof_last_alarm
        if delta < self.alarm_auto_inhibit_period:
            self.model.record(self, t, sent=False)  # harness: record the inhibited attempt
            return  # we are in the auto inhibit period - do nothing
        self.timeof_last_alarm = t
        self.alarm_create_callback(self, session, t)

    def update(self, value, session):
        self.value = value
        if self.test_level():
            # level is bad
            self.trigger_down_counter -= self.model.rrd_step
            if self.trigger_down_counter <= 0:
                self.__generate_alarm(session)
                # reset trigger counter
                self.trigger_down_counter = self.alarm_trigger_period
        else:
            # level good - reset trigger counter
            self.trigger_down_counter = self.alarm_trigger_period


class ObjectMonitor:
    """The seed's ObjectMonitor, one per object; ``monitortype`` "VM" or "HOST"."""

    def __init__(self, model, monitortype, uuid, xmlconfig):
        self.model = model
        self.monitortype = monitortype
        self.uuid = uuid
        self.xmlconfig = None
        self.variables = []
        self.errors = []
        self.refresh_config(xmlconfig)

    def get_default_variable_config(self, variable_name, config_tag):
        if self.monitortype == "VM":
            return vm_default_variable_config(variable_name, config_tag)
        return host_default_variable_config(variable_name, config_tag)

    def refresh_config(self, xmlconfig):
        # harness: all_xmlconfigs[self.uuid] is passed in
        if xmlconfig != self.xmlconfig:
            self.xmlconfig = xmlconfig
            try:
                self.__parse_xmlconfig()
            except XmlConfigException as e:
                self.errors.append(str(e))
            except ExpatError as e:
                self.errors.append(str(e))

    def __parse_xmlconfig(self):
        if not self.xmlconfig:
            self.variables = []
            return
        xmldoc = minidom.parseString(self.xmlconfig)
        variable_nodes = xmldoc.getElementsByTagName('variable')
        variable_names = []
        for vn in variable_nodes:
            var = Variable(self.model, vn, self.alarm_create, self.get_default_variable_config, self.model.fs_usage)
            if var.name not in variable_names:
                variable_names.append(var.name)
            vars_with_same_name = [v for v in self.variables if v.name == var.name]
            count = 0
            append_var = True
            for v in vars_with_same_name:
                if count > 0:
                    self.variables.remove(v)
                    continue
                count += 1
                if variable_configs_differ(var, v):
                    self.variables.remove(v)
                else:
                    append_var = False
            if append_var:
                self.variables.append(var)
        variables_to_remove = [v for v in self.variables if v.name not in variable_names]
        for v in variables_to_remove:
            self.variables.remove(v)

    def process_row(self, values_by_name, session=None):
        """process_rrd_updates for one row: ``values_by_name`` is the object's report."""
        params_in_obj_report = list(values_by_name)
        for var in self.variables:
            params_to_consolidate = [p for p in params_in_obj_report if var.rrd_regex.search(p)]
            values_to_consolidate = [values_by_name[p] for p in params_to_consolidate]
            try:
                value = var.consolidation_fn(values_to_consolidate)
            except (ZeroDivisionError, ValueError):
                continue  # harness: the project's decision for average([]) / max([]), which crash perfmon
            var.update(value, session)

    def process_rrd_updates(self, obj_report, num_rows, session=None):
        "The seed's process_rrd_updates, verbatim but for the harness's average([]) / max([]) decision"
        params_in_obj_report = obj_report.get_var_names()
        for var in self.variables:
            params_to_consolidate = [p for p in params_in_obj_report if var.rrd_regex.search(p)]
            for row in range(num_rows):
                values_to_consolidate = [obj_report.get_value(param, row) for param in params_to_consolidate]
                try:
                    value = var.consolidation_fn(values_to_consolidate)
                except (ZeroDivisionError, ValueError):
                    continue  # harness: as in process_row
                var.update(value, session)

    def alarm_create(self, var, session, t):
        self.model.record(var, t, sent=True)


class ObjectReport:
    "The seed's ObjectReport: one object's values by data source and row (get_value's bare except included)"

    def __init__(self, uuid):
        self.uuid = uuid
        self.vars = {}

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


class SeedModel:
    """Harness around the seed classes: a clock, the step, and the alarm log.

    ``alarms`` collects (time_s, monitortype, uuid, variable, priority, value, sent).
    """

    def __init__(self, rrd_step, fs_usage=lambda: 0.0):
        self.rrd_step = rrd_step
        self.now = 0.0
        self.fs_usage = fs_usage
        self.alarms = []
        self._monitor = None

    def clock(self):
        return self.now

    def record(self, var, t, sent):
        self.alarms.append((t, self._monitor.monitortype, self._monitor.uuid, var.name,
                            var.alarm_priority, var.value, sent))

    def refresh(self, monitor, xmlconfig):
        """refresh_config, then the project's all-or-nothing decision: a rejected document leaves the
        variables exactly as they were (the seed would keep those parsed before the bad one)."""
        before_vars, before_errors = list(monitor.variables), len(monitor.errors)
        monitor.refresh_config(xmlconfig)
        if len(monitor.errors) > before_errors:  # harness: all or nothing
            monitor.variables = before_vars
            return False
        return True

    def process(self, monitor, values_by_name):
        self._monitor = monitor
        monitor.process_row(values_by_name)
