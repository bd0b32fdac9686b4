"""The `__main__` guard every stage shares: read params.yaml, run, report."""
import sys

from core import StageError
from core.params import load


def run(main, params_path="params.yaml"):
    """Call `main(params)`; a StageError becomes one line on stderr and exit 1."""
    try:
        main(load(params_path))
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; outputs were left as they were before this run", file=sys.stderr)
        sys.exit(130)
