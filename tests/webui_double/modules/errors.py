"""modules/errors.py: report() prints and swallows; the double also keeps the messages for tests."""

reported: list[str] = []


def report(message, *, exc_info=False):
    import traceback

    reported.append(message + ("\n" + traceback.format_exc() if exc_info else ""))
