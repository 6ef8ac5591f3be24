"""``hyhome``: a front end for the Hy-Home Bootstrap playbooks, built on ansible-runner.

It runs the same playbooks as ``ansible-playbook`` (it is not a second implementation), shows the
progress from runner events, and ends with a summary people read or a JSON report machines read.
"""

__version__ = "1.0.0"
