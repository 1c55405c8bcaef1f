"""The lab: what runs the switch together with its simulators and real parts.

``payswitch`` command line (``cli``), ``payswitch demo`` (``demo``: the processes, the
demo config, the report) and the harness that finds or starts PostgreSQL and Mosquitto
(``realparts``), shared by the demo, the tests and the benchmarks. It sits above every
other package and may import any of them; nothing in the runtime (codecs, hsm, ledger,
routing, switch) or in simulators/ imports it.
"""
