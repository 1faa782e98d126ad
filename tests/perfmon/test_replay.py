"""virt-exporter perfmon-replay: the documented example prints what docs/perfmon.md shows, the
replay agrees with the seed model (perfmon's own logic) on random sequences, and bad input is one
line naming the file and line, exit 2."""

from __future__ import annotations

import io
import json
import math
import random
import re
from pathlib import Path

import pytest

from virt_exporter.perfmon.cli import perfmon_replay_main

from .harness import SeedVM, config_xml
from .test_engine_random import random_values, random_variable

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "docs" / "perfmon-replay-example.xml"
EXAMPLE_DATA = REPO / "docs" / "perfmon-replay-example.csv"
DOC = REPO / "docs" / "perfmon.md"
T0_S = 1_700_000_000
SEQUENCES = 200


def run(argv, stdin: str = ""):
    out, err = io.StringIO(), io.StringIO()
    rc = perfmon_replay_main(argv, out=out, err=err, stdin=io.StringIO(stdin))
    return rc, out.getvalue(), err.getvalue()


def test_the_documented_example_prints_what_the_doc_shows():
    rc, out, err = run(["--perfmon.config", str(EXAMPLE_CONFIG), str(EXAMPLE_DATA)])
    assert rc == 0 and err == ""
    documented = re.search(r"<!-- replay-output:begin -->\n```\n(.*?)```\n<!-- replay-output:end -->",
                           DOC.read_text(), re.S)
    assert documented, "docs/perfmon.md has no replay-output block"
    assert out == documented.group(1)
    alarms = [json.loads(line) for line in out.splitlines()]
    assert [a["object"] for a in alarms] == ["host", "host", "web1", "web1"]


def test_stdin_and_show_inhibited():
    data = EXAMPLE_DATA.read_text()
    rc, out, _ = run(["--perfmon.config", str(EXAMPLE_CONFIG), "--show-inhibited", "-"], stdin=data)
    attempts = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(attempts) > 4 and sum(1 for a in attempts if not a.get("inhibited")) == 4
    assert all(a["inhibited"] is True for a in attempts if "inhibited" in a)


def _model_alarms(step_s, xml, rows):
    seed = SeedVM(step_s, xml, T0_S)
    for k, values in enumerate(rows, start=1):
        seed.run(T0_S + k * step_s, values)
    return sorted(seed.alarms())


@pytest.mark.parametrize("chunk", range(4))
def test_replay_equals_the_seed_model_on_random_sequences(chunk, tmp_path):
    per_chunk = SEQUENCES // 4
    attempts = 0
    for seed in range(chunk * per_chunk, (chunk + 1) * per_chunk):
        rng = random.Random(seed)
        step_s = rng.choice((5, 10, 60))
        variables = [random_variable(rng, "v%d" % i, step_s) for i in range(rng.randint(1, 3))]
        xml = config_xml(variables)
        rows, values = [], None
        for _ in range(rng.randint(20, 80)):
            values = random_values(rng, values)
            # now and then a cell without a value (perfmon reads 0.0) or a NaN (a good step)
            rows.append({n: rng.choice([None, math.nan]) if rng.random() < 0.04 else v for n, v in values.items()})
        names = sorted(rows[0])
        csv = ["time,object," + ",".join(names)]
        csv += ["%d,vm1,%s" % (T0_S + k * step_s, ",".join("" if v[n] is None else repr(float(v[n])) for n in names))
                for k, v in enumerate(rows, start=1)]
        config = tmp_path / ("%d.xml" % seed)
        config.write_text("<perfmon><vm>%s</vm></perfmon>" % xml)
        rc, out, err = run(["--perfmon.config", str(config), "--perfmon.step", str(step_s), "--show-inhibited", "-"],
                           stdin="\n".join(csv) + "\n")
        assert rc == 0, err
        got = sorted((a["time"], a["variable"], a["value"], not a.get("inhibited", False))
                     for a in map(json.loads, out.splitlines()))
        assert got == _model_alarms(step_s, xml, rows), "seed %d" % seed
        attempts += len(got)
    assert attempts > per_chunk  # the sequences do alarm


@pytest.mark.parametrize("data,problem", [
    ("", "empty file"),
    ("when,object,cpu0\n", ":1: the header must start with time,object"),
    ("time,object,cpu0,cpu0\n", ":1: data source names must be present and distinct"),
    ("time,object,cpu0\n60,host,0.5\n120,host,high\n", ":3: cpu0: not a number: 'high'"),
    ("time,object,cpu0\n60,host,0.5\n90,host,0.5\n", ":3: host's rows at line 2 and here are 30 s apart"),
    ("time,object,cpu0\n60,host\n", ":2: 2 fields, the header has 3"),
    ("time,object,cpu0\n60,,0.5\n", ":2: no object"),
    ("time,object,cpu0\n60,host,inf\n", ":2: cpu0: infinite value"),
])
def test_bad_data_is_one_line_naming_the_file_and_line(tmp_path, data, problem):
    path = tmp_path / "data.csv"
    path.write_text(data)
    rc, out, err = run(["--perfmon.config", str(EXAMPLE_CONFIG), str(path)])
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("perfmon-replay: error: %s" % path) and problem in err, err


def test_bad_config_step_or_missing_file_is_one_line(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<perfmon><vm><config><variable><name value='x'/></variable></config></vm></perfmon>")
    for argv, problem in (([ "--perfmon.config", str(broken), str(EXAMPLE_DATA)], str(broken)),
                          (["--perfmon.config", str(EXAMPLE_CONFIG), "--perfmon.step", "0", str(EXAMPLE_DATA)],
                           "--perfmon.step must be 1..3600"),
                          (["--perfmon.config", str(EXAMPLE_CONFIG), str(tmp_path / "nope.csv")], "nope.csv"),
                          (["--perfmon.config", str(EXAMPLE_CONFIG)], "required")):
        rc, out, err = run(argv)
        assert rc == 2 and out == "" and err.count("\n") == 1 and problem in err, (argv, err)
