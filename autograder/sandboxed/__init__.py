"""The code that runs inside the sandbox: the fork server (zygote.py), the worker (worker.py), the operations it
runs on a student's classes (harness.py), what a layer's forward is seen to compute (dataflow.py) and the wire
format (protocol.py).

This folder is copied as a whole into each cage and imported there as plain modules (`import harness`), so
nothing in it may import from the autograder package. The judge imports harness and protocol from here too,
so both sides run the very same code.
"""
