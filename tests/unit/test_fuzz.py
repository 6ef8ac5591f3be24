"""Property-based fuzzing (hypothesis) of the parsers and checks that read hostile input.

Properties, not examples: every parser either returns a value with the documented shape or raises
HyHomeError (never anything else); what a check accepts is what it promises (a name is one safe path
component, a path stays inside its root even through symlinks); `.env` values survive a render/parse round
trip exactly; a parse error never echoes the offending text.

Profiles: "ci" (default, bounded: the module runs in a few seconds) and "thorough" (HYPOTHESIS_PROFILE=thorough).
No example database is written (the working tree stays clean).
"""

from __future__ import annotations

import ipaddress
import os
import string
from pathlib import Path

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import env_file, secrets, tls
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    RESOURCE_NAME_MAX,
    check_resource_name,
    project_from_config,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.data_dirs import plan as data_dirs_plan
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import ensure_within
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

settings.register_profile("ci", max_examples=100, deadline=None, database=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("thorough", max_examples=5000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Text with the characters that matter to these parsers: separators, quotes, escapes, controls, NUL,
# non-ASCII, and the odd long run.
nasty = (st.text(alphabet=st.sampled_from([*string.printable, "\x00", "\x85", "\u2028", "é", "ß", "\ufeff"]),
                 max_size=80)
         | st.lists(st.sampled_from(["..", ".", "/", "*", "a", "%", "[", "]", "-"]), max_size=8).map("".join))
anything = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | nasty,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty, inner, max_size=4),
    max_leaves=12,
)


# ------------------------------------------------------------------------------------------
# TLS: the SAN parser

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=5).map(".".join).filter(
    lambda h: len(h) <= 253 and not h.split(".")[-1].isdigit())


@given(nasty | anything)
def test_san_parser_raises_only_its_own_error_and_accepts_only_valid_names(name):
    try:
        san = tls.parse_san(name)
    except HyHomeError as e:
        assert "Traceback" not in e.msg
        return
    assert san.kind in ("dns", "ip")
    assert tls.parse_san(san.value) == san                     # normalised form is a fixed point
    if san.kind == "ip":
        assert str(ipaddress.ip_address(san.value)) == san.value
    else:
        host = san.value
        assert host.isascii() and host == host.lower() and len(host) <= 253
        assert not any(c in host for c in "@/:% \x00\n")
        labels = host.split(".")
        body = labels[1:] if labels[0] == "*" else labels
        assert all(1 <= len(x) <= 63 and not x.startswith("-") and not x.endswith("-") for x in body)
        assert "*" not in ".".join(body)
    san.to_x509()                                              # cryptography takes what we accept


@given(hostname, st.booleans(), st.booleans())
def test_every_valid_hostname_is_accepted_and_normalised(host, upper, trailing_dot):
    written = (host.upper() if upper else host) + ("." if trailing_dot else "")
    assert tls.parse_san(written) == tls.San("dns", host)


@given(hostname.filter(lambda h: h.count(".") >= 1))
def test_wildcards_only_as_the_whole_leftmost_label(host):
    assert tls.parse_san("*." + host) == tls.San("dns", "*." + host)
    first, rest = host.split(".", 1)
    with pytest.raises(HyHomeError):
        tls.parse_san(f"{first}.*.{rest}")
    with pytest.raises(HyHomeError):
        tls.parse_san(f"a*{host}")


@given(st.ip_addresses())
def test_every_ip_address_is_accepted_in_compressed_form(ip):
    assert tls.parse_san(str(ip)) == tls.San("ip", ip.compressed)
    assert tls.parse_san(ip.exploded) == tls.San("ip", ip.compressed)


@given(st.lists(nasty | hostname, max_size=6))
def test_san_lists_are_deduplicated_or_refused(names):
    try:
        sans = tls.parse_sans(names)
    except HyHomeError:
        return
    assert sans and len(set(sans)) == len(sans)
    assert set(sans) == {tls.parse_san(n) for n in names if n.strip()}


# ------------------------------------------------------------------------------------------
# Secret names (one rule for compose names and registry names)

@given(nasty | anything)
def test_a_name_accepted_is_one_safe_path_component(name):
    try:
        out = check_resource_name("secret", name)
    except HyHomeError as e:
        assert "\n" not in e.msg
        return
    assert out == name and isinstance(out, str)
    assert 1 <= len(out) <= RESOURCE_NAME_MAX
    assert out not in (".", "..") and ".." not in out and "/" not in out and "\x00" not in out
    assert not out.startswith((".", "-", "_"))
    assert os.path.basename(out) == out and os.path.normpath(out) == out
    assert out.isascii() and out.isprintable() and not any(c.isspace() for c in out)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,60}(\.[A-Za-z0-9_-]{1,20}){0,3}", fullmatch=True))
def test_plain_compose_names_are_accepted(name):
    assert check_resource_name("secret", name) == name


@given(nasty)
def test_secrets_validate_name_is_the_same_rule(name):
    def outcome(f):
        try:
            return f("secret", name) if f is check_resource_name else f(name, "fuzz")
        except HyHomeError:
            return "refused"
    assert outcome(check_resource_name) == outcome(secrets.validate_name)


# ------------------------------------------------------------------------------------------
# The secrets registry schema

entry_value = st.one_of(
    st.sampled_from(["password", "hex", "token", "rsa", "ed25519", "htpasswd", "provided", "bogus", "0440", "0999"]),
    st.integers(-10, 100_000_000), st.booleans(), st.none(), nasty, st.lists(nasty, max_size=3))
registry_entry = st.dictionaries(
    st.sampled_from(sorted(secrets.REGISTRY_KEYS)) | nasty, entry_value, max_size=5) | anything
registry = st.dictionaries(nasty | st.sampled_from(["db", "api_key", "../x", "..", "a/b", ""]), registry_entry,
                           max_size=4)


@given(registry, st.sampled_from(["secrets", "srv/secrets"]))
def test_registry_is_refused_or_every_secret_stays_in_the_tree(tmp_path_factory, reg, sub):
    root = tmp_path_factory.mktemp("reg") / sub
    try:
        checked = secrets.merge_registry(None, None, reg)
        specs = secrets.build_specs(None, reg, str(root))
    except HyHomeError as e:
        assert e.msg.strip()
        return
    assert set(checked) == set(reg)
    for name, entry in checked.items():
        assert check_resource_name("secret", name) == name
        assert set(entry) <= secrets.REGISTRY_KEYS
    for spec in specs:
        assert spec.name in reg and reg[spec.name].get("file")
        path = os.path.normpath(spec.path)
        assert path.startswith(str(root) + os.sep)
        assert not os.path.relpath(path, root).startswith((secrets.HISTORY_DIR + os.sep, ".." + os.sep))


@given(st.dictionaries(st.sampled_from(["db", "api"]), st.fixed_dictionaries(
    {"kind": st.sampled_from(["password", "hex", "base64", "token"]), "file": st.sampled_from(["a", "b/c", "d"]),
     "length": st.integers(-5, 10_000)}), min_size=1))
def test_lengths_are_bounded_before_anything_is_generated(tmp_path_factory, reg):
    root = tmp_path_factory.mktemp("len")
    try:
        specs = secrets.build_specs(None, reg, str(root))
    except HyHomeError:
        return
    for spec in specs:
        assert 1 <= (spec.length or 1) <= 4096


# ------------------------------------------------------------------------------------------
# .env: the parser, and the render/parse round trip

env_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
env_value = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"),
                    max_size=60)


@given(st.text(max_size=300) | nasty)
def test_env_parser_raises_only_its_own_error(text):
    try:
        lines = env_file.parse(text)
    except HyHomeError:
        return
    keys = [ln.key for ln in lines if ln.key is not None]
    assert len(keys) == len(set(keys))


@given(st.dictionaries(env_key, env_value, min_size=1, max_size=8))
def test_env_render_then_parse_gives_back_every_value(values):
    try:
        text = env_file.render([], values)
    except HyHomeError as e:
        # Only what .env cannot hold unambiguously is refused: ' mixed with $, " or \ .
        bad = [v for v in values.values() if "'" in v and any(c in v for c in '$"\\')]
        assert bad, e.msg
        return
    assert env_file.as_dict(env_file.parse(text)) == values


@given(st.dictionaries(env_key, env_value, min_size=1, max_size=5), st.dictionaries(env_key, env_value, max_size=5))
def test_env_render_over_an_example_keeps_its_other_lines(example, values):
    lines = []
    try:
        example_text = env_file.render([], example, header="# example")
        lines = env_file.parse(example_text)
        text = env_file.render(lines, values)
    except HyHomeError:
        return
    parsed = env_file.as_dict(env_file.parse(text))
    assert parsed == {**example, **values}
    assert "# example" in text.splitlines()


@given(env_key, st.from_regex(r"[A-Za-z0-9]{12,30}", fullmatch=True),
       st.sampled_from(["{k} {v} is not an assignment", "{k}='{v}", "{k}=\"{v}", "{k}='x' {v}", "{k} = = {v} '",
                        "export {v}' x"]))
def test_env_parse_errors_never_echo_the_line(key, token, shape):
    line = shape.format(k=key, v=token)
    try:
        env_file.parse(f"A=1\n{line}\n")
    except HyHomeError as e:
        assert token not in e.msg
        assert ":2:" in e.msg


# ------------------------------------------------------------------------------------------
# Path containment: fileops.ensure_within, the secrets tree, data_dirs bind mounts

COMPONENTS = ["a", "b", "..", ".", "", "in_link", "out_link", "loop", "deep/x", "/"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/ with a/b, a symlink pointing inside, one pointing outside, and a loop; outside/ next to it."""
    base = tmp_path_factory.mktemp("tree")
    root, outside = base / "root", base / "outside"
    (root / "a" / "b").mkdir(parents=True)
    (root / "deep").mkdir()
    outside.mkdir()
    (root / "in_link").symlink_to(root / "a")
    (root / "out_link").symlink_to(outside)
    (root / "a" / "out_link").symlink_to("../../outside")
    (root / "loop").symlink_to(root / "loop")
    return root, outside


def within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


path_text = st.lists(st.sampled_from(COMPONENTS), min_size=0, max_size=7).map("/".join)


@given(path_text)
def test_a_path_accepted_is_inside_the_root_even_through_symlinks(tree, rel):
    root, _ = tree
    try:
        out = ensure_within(str(root), rel)
    except HyHomeError as e:
        assert str(rel) in e.msg or rel == "" or e.msg
        return
    assert within(out, str(root))
    assert within(os.path.realpath(out), os.path.realpath(root))


@given(path_text)
def test_a_path_inside_by_both_measures_is_accepted(tree, rel):
    root, _ = tree
    joined = os.path.normpath(os.path.join(root, rel))
    assume(within(joined, str(root)) and within(os.path.realpath(joined), os.path.realpath(root)))
    assert ensure_within(str(root), rel) == joined


@given(path_text)
def test_secret_files_stay_in_the_secrets_tree(tree, rel):
    root, _ = tree
    try:
        specs = secrets.build_specs(None, {"s": {"kind": "password", "file": rel}}, str(root))
    except HyHomeError:
        return
    if not rel:                 # no file: a registry-only entry is not managed
        assert specs == []
        return
    (spec,) = specs
    assert within(os.path.realpath(spec.path), os.path.realpath(root)) and spec.path != str(root)


@given(st.lists(path_text, min_size=1, max_size=3), st.booleans())
def test_data_dirs_manages_only_paths_inside_the_allowed_roots(tree, sources, read_only):
    root, _ = tree
    config = {"services": {f"s{i}": {"image": "hyhome/busybox:local", "user": "1000:1000", "volumes": [
        {"type": "bind", "source": os.path.normpath(os.path.join(root, src)), "target": f"/data{i}",
         "read_only": read_only}]} for i, src in enumerate(sources)}}
    project = project_from_config(config, str(root))
    try:
        plan = data_dirs_plan(project, {"missing_image": "warn"})
    except HyHomeError as e:
        assert e.msg.startswith("nothing changed")
        return
    for item in plan.items:
        path = str(item.path)
        assert within(path, str(root)) and within(os.path.realpath(path), os.path.realpath(root))
    assert all(Path(p["path"]).is_absolute() for p in plan.host_paths)
