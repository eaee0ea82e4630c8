"""The ``edgefer`` command line: one module per command group, thin front-ends over library code."""
