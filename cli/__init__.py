"""The top floor: the ``portrait`` command line, its benchmarks, the fault suite, the demo
and the local stack. Nothing below imports from here."""
