"""Exit statuses (sysexits.h values), documented in README.md."""

OK = 0
USAGE = 64  # EX_USAGE: bad command line
DATAERR = 65  # EX_DATAERR: an input item held no SMTP reply
NOINPUT = 66  # EX_NOINPUT: an input file (explain --email) cannot be read
NOHOST = 68  # EX_NOHOST: the domain does not exist, has a null MX or no usable mail host
UNAVAILABLE = 69  # EX_UNAVAILABLE: permanent failure (5xx) or an expectation not met
SOFTWARE = 70  # EX_SOFTWARE: an internal error (a bug); the record says which
IOERR = 74  # EX_IOERR: reading the input or writing the output failed
TEMPFAIL = 75  # EX_TEMPFAIL: transient failure (4xx, timeouts, greylisting)
INTERRUPTED = 130
