# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0 (see LICENSE at the collection root)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: resource_name
short_description: Is a value a safe resource name (a secret name that may become a file name)?
version_added: "0.1.0"
description:
  - True when the value is one plain file name by the rule compose secret names and secrets registry names
    share (C(check_resource_name) in the collection's compose model) - letters, digits, C(.), C(_) and C(-),
    starting with a letter or digit, at most 200 characters, no C(/) and no C(..).
  - The secrets role checks every name a managed host returns before it becomes a path in the controller
    store, so a host can never choose where the controller writes.
author:
  - Hy-Home Bootstrap maintainers (@hyhome)
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Refuse a store name that is not a plain file name
  ansible.builtin.assert:
    that: item.key is hyhome.bootstrap.resource_name
  loop: "{{ secrets_result.store_paths | ansible.builtin.dict2items }}"
"""

RETURN = r"""
_value:
  description: Whether the value is a safe resource name.
  type: bool
"""

from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (  # noqa: E402
    check_resource_name,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError  # noqa: E402


def resource_name(value) -> bool:
    """The shared name rule as a Jinja test: no exception, just the answer."""
    try:
        check_resource_name("resource", value)
    except HyHomeError:
        return False
    return True


class TestModule:
    """Jinja tests of the collection."""

    def tests(self):
        return {"resource_name": resource_name}
