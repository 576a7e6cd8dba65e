"""``python -m fraudcep_flink run [options]``: the job (:mod:`fraudcep_flink.job`)."""

from __future__ import annotations

import sys

from fraudcep_flink.job import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "run":
        print("usage: python -m fraudcep_flink run [options] (see --help)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args[1:]))
