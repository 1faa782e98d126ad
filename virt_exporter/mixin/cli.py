"""``virt-exporter mixin [--config KNOBS.yml] --output-dir DIR`` and ``--print-defaults``.

Writes DIR/alerts/<group>.rules.yml for every enabled group, DIR/alerts/optional/<group>.rules.yml for
the optional groups that are off, and DIR/dashboards/<name>.json. Exit codes: 0 written, 2 unusable knobs
or arguments (one line on stderr).
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Optional, Sequence

from ..usage import UsageError, UsageParser, fail
from . import dashboards
from .config import MixinConfig, MixinConfigError, defaults_yaml, load_config
from .rules import GROUPS, rule_files

COMMAND = "virt-exporter mixin"


def render(cfg: MixinConfig) -> Dict[str, str]:
    """Relative path → file text of everything the knobs produce."""
    out = {"alerts/" + path: text for path, text in rule_files(cfg).items()}
    for name, board in dashboards.render(cfg).items():
        out["dashboards/" + name] = dashboards.dump(board)
    return out


def write(cfg: MixinConfig, output_dir: str) -> Dict[str, str]:
    """Write the files under ``output_dir``; a rules file this run moved (a group switched on or off)
    is removed from its other place, so Prometheus never loads a group twice."""
    files = render(cfg)
    for group in GROUPS:
        for path in ("alerts/%s.rules.yml" % group, "alerts/optional/%s.rules.yml" % group):
            full = os.path.join(output_dir, path)
            if path not in files and os.path.exists(full):
                os.remove(full)
    for path, text in files.items():
        full = os.path.join(output_dir, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        tmp = full + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, full)
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = UsageParser(prog=COMMAND, allow_abbrev=False,
                    description="Write the alert rules (and dashboards) for a knobs file.")
    p.add_argument("--config", default=None, metavar="KNOBS.yml",
                   help="knobs file (YAML); without it every knob has its default")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="write DIR/alerts/*.rules.yml, DIR/alerts/optional/ and DIR/dashboards/*.json")
    p.add_argument("--print-defaults", action="store_true", help="print a knobs file with every default and exit")
    try:
        args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.print_defaults:
            sys.stdout.write(defaults_yaml())
            return 0
        if not args.output_dir:
            raise UsageError("--output-dir is required")
        cfg = load_config(args.config) if args.config else MixinConfig()
        if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
            raise UsageError("--output-dir %s is not a directory" % args.output_dir)
        files = write(cfg, args.output_dir)
    except (UsageError, MixinConfigError) as e:
        return fail(COMMAND, e)
    except OSError as e:
        return fail(COMMAND, "%s: %s" % (e.filename or args.output_dir, e.strerror or e))
    print("wrote %d files under %s" % (len(files), args.output_dir))
    return 0
