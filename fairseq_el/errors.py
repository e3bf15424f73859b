"""The one base of every error that is the user's to fix.

A :class:`UserError` carries a message written for the user: it names the option, file (and line)
or checkpoint to fix. Console scripts (:func:`fairseq_el.usage.entry_point`) print it as one line,
``prog: message``, and exit with status 2; any other exception is a bug of ours and keeps its
traceback. Each domain keeps its own subclass (:class:`~fairseq_el.usage.UsageError`,
:class:`~fairseq_el.files.OutputError`, :class:`~fairseq_el.convert.checkpoint.ConversionError`,
...), mixed with the builtin type callers already catch (``ValueError``, ``OSError``).
"""


class UserError(Exception):
    """An error whose message tells the user what to fix; reported without a traceback."""
