"""I/O: `smtp-probe serve`, the Prometheus exporter: the HTTP adapter (`app`), the results it
keeps (`cache`) and the exposition format (`expose`). What the metrics say is decided in the
pure core (`probe.metrics`, `probe.serveconf`)."""
