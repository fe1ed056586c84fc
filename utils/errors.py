"""User-facing errors and the CLI wrapper that turns them into one-line messages."""
import sys


class UserError(ValueError):
    """A problem with the user's input (a flag, a file, a data set).

    Scripts print its message as one line and exit non-zero; no traceback.
    """


def run_cli(main):
    """Run `main()` and turn a `UserError` into `error: <message>` plus exit code 2."""
    try:
        return main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
