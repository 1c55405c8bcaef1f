"""Certification suites a bank runs against its own issuer or acquirer host.

``suite.py`` the TOML format and its loader, ``checks.py`` the rules (pure),
``report.py`` the human summary, JUnit XML and the per-case message log,
``wire.py`` a framed link in a network's dialect (client and listener),
``issuer_host.py`` / ``acquirer_host.py`` the two runners, ``suites/`` the suites
shipped with the project (one per network and role). See simulators/README.md.
"""
