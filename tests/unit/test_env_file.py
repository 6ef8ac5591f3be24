"""Tests of the env core: dotenv parsing, rendering with comments and order kept, refusal of
secrets, required variables from the compose files, idempotence, drift and bad input."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import uuid
from pathlib import Path

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import env_file as core
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import EnvRef, Location
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "env" / "project"
STACK = Path(__file__).resolve().parents[2] / "stack"


@pytest.fixture
def project(tmp_path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(FIXTURE, dest)
    return dest


def refs_of(project: Path):
    refs, warnings = core.compose_env_refs(str(project))
    assert warnings == []
    return refs


def run(project: Path, values=None, **kw) -> core.EnvPlan:
    kw.setdefault("env_refs", refs_of(project))
    p = core.plan(str(project), values or {}, **kw)
    if p.changed_any:
        core.apply(p)
    return p


# --- parsing -----------------------------------------------------------------------------------


def test_parse_reads_compose_dotenv_syntax():
    text = (
        "# comment\n"
        "\n"
        "A=plain\n"
        "export B=with-export\n"
        "C='single $NOT_INTERPOLATED # not a comment'\n"
        'D="double \\"quoted\\" \\\\ x"\n'
        "E=value   # inline comment\n"
        "F=\n"
        "G\n"
        "  H = spaced  \n"
        "I=a#b\n"
    )
    lines = core.parse(text)
    assert [ln.key for ln in lines] == [None, None, "A", "B", "C", "D", "E", "F", "G", "H", "I"]
    values = core.as_dict(lines)
    assert values == {
        "A": "plain", "B": "with-export", "C": "single $NOT_INTERPOLATED # not a comment",
        "D": 'double "quoted" \\ x', "E": "value", "F": "", "G": None, "H": "spaced", "I": "a#b",
    }
    assert lines[0].text == "# comment" and lines[3].number == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nA=2\n", "already set on line 1"),
        ("A='open\n", "unterminated ' quote"),
        ('A="x" trailing\n', "unexpected text after the closing quote"),
        ("1ABC=x\n", "not a valid variable name"),
        ("just some words\n", "not a KEY=value line"),
        ("A=1\x00\n", "NUL"),
    ],
)
def test_parse_rejects_bad_input_with_line_numbers(text, message):
    with pytest.raises(HyHomeError, match=message):
        core.parse(text, "x.env")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain-value_1.2:3/@,+=", "plain-value_1.2:3/@,+="),
        ("", ""),
        ("two words", "'two words'"),
        ("cost $5 # really", "'cost $5 # really'"),
        ("it's", '"it\'s"'),
    ],
)
def test_format_value_round_trips_through_parse(value, written):
    assert core.format_value("K", value) == written
    assert core.as_dict(core.parse(f"K={written}\n")) == {"K": value}


@pytest.mark.parametrize("value", ["line1\nline2", "it's $HOME", "it's \\ back"])
def test_format_value_refuses_what_dotenv_cannot_hold_unambiguously(value):
    with pytest.raises(HyHomeError, match="K"):
        core.format_value("K", value)


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (8443, "8443"), (1.5, "1.5"), (None, ""), ("x", "x")],
)
def test_inventory_scalars_become_text(value, text):
    assert core.to_text(value) == text


def test_inventory_non_scalars_are_refused(project):
    with pytest.raises(HyHomeError, match=r"env value SITE_NAME: .*list"):
        core.plan(str(project), {"SITE_NAME": ["a", "b"]}, env_refs=[])


# --- rendering ---------------------------------------------------------------------------------


def test_render_keeps_comments_order_and_untouched_lines(project):
    p = run(project, {"SITE_NAME": "Hy Home", "EXTRA_B": 2, "EXTRA_A": "a"})
    text = (project / ".env").read_text()
    example = (project / ".env.example").read_text().splitlines()
    lines = text.splitlines()
    assert lines[0].startswith("# Managed by hyhome.bootstrap.env")
    # every example line is there, in order; only SITE_NAME's line changed
    body = lines[1:1 + len(example)]
    def others(seq):
        return [ln for ln in seq if not ln.startswith("SITE_NAME=")]

    assert others(body) == others(example)
    assert "SITE_NAME='Hy Home'" in body
    assert "export WEB_PORT=8080  # inline comment kept while the value does not change" in body
    # unknown keys appended at the end, in the order given, after a comment
    assert lines[-3:] == ["# Set by the inventory (env_values), not in .env.example:", "EXTRA_B=2", "EXTRA_A=a"]
    assert p.added == ["SITE_NAME", "SITE_TAGLINE", "WEB_PORT", "WORKER_QUEUE", "ADMIN_PASSWORD_FILE",
                       "EXTRA_B", "EXTRA_A"]


def test_changed_export_line_keeps_its_export(project):
    run(project, {"WEB_PORT": 9090})
    assert "export WEB_PORT=9090" in (project / ".env").read_text().splitlines()


def test_without_header_and_without_example(tmp_path):
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    run(tmp_path, {"A": "1"}, header=False, env_refs=[])
    assert (tmp_path / ".env").read_text() == "# Set by the inventory (env_values), not in .env.example:\nA=1\n"
    with pytest.raises(HyHomeError, match=r"ships no \.env\.example"):
        core.plan(str(tmp_path), {}, env_refs=[], require_example=True)


# --- idempotence, mode, drift ------------------------------------------------------------------


def test_second_run_changes_nothing_and_mode_is_0640(project):
    first = run(project, {"SITE_NAME": "x"})
    assert first.changed_any and first.content_changed
    st = os.stat(project / ".env")
    assert stat.S_IMODE(st.st_mode) == 0o640
    second = run(project, {"SITE_NAME": "x"})
    assert not second.changed_any
    assert (second.added, second.changed, second.removed) == ([], [], [])
    assert os.stat(project / ".env").st_ino == st.st_ino       # not rewritten
    assert not [n for n in os.listdir(project) if ".tmp" in n]  # no temp file left behind


def test_plan_alone_writes_nothing(project):
    p = core.plan(str(project), {"SITE_NAME": "x"}, env_refs=refs_of(project))
    assert p.changed_any and not (project / ".env").exists()


def test_hand_edits_are_put_back_and_reported_by_key(project):
    run(project, {"SITE_NAME": "x"})
    env = project / ".env"
    env.write_text(env.read_text().replace("WORKER_QUEUE='jobs'", "WORKER_QUEUE=edited") + "STRAY=1\n")
    p = core.plan(str(project), {"SITE_NAME": "x"}, env_refs=refs_of(project))
    assert (p.changed, p.removed, p.added) == (["WORKER_QUEUE"], ["STRAY"], [])
    core.apply(p)
    assert "WORKER_QUEUE='jobs'" in env.read_text() and "STRAY" not in env.read_text()


def test_mode_drift_alone_is_fixed_without_rewriting(project):
    run(project)
    env = project / ".env"
    os.chmod(env, 0o644)
    inode = os.stat(env).st_ino
    p = run(project)
    assert p.mode_changed and not p.content_changed
    assert stat.S_IMODE(os.stat(env).st_mode) == 0o640 and os.stat(env).st_ino == inode


def test_owner_is_applied_when_asked(project):
    run(project, uid=os.getuid(), gid=os.getgid(), mode=0o600)
    st = os.stat(project / ".env")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (os.getuid(), os.getgid(), 0o600)


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["DB_PASSWORD", "SMTP_PASSWD", "POSTGRES_PASS", "APP_SECRET", "GITHUB_TOKEN", "API_KEY", "APIKEY",
     "SSH_PASSPHRASE", "AWS_CREDENTIALS", "PRIVATE_KEY_PEM", "SLACK_WEBHOOK_URL", "REDIS_AUTH", "pg_pwd",
     "KEY", "HASH_SALT"],
)
def test_sensitive_names(name):
    assert core.is_sensitive_name(name)


@pytest.mark.parametrize(
    "name",
    ["DB_PASSWORD_FILE", "TLS_KEY_PATH", "SECRETS_DIR", "PASSENGER_COUNT", "KEY_TYPE", "MONKEY", "AUTHOR",
     "HYHOME_DOMAIN", "GATEWAY_HTTPS_PORT"],
)
def test_non_sensitive_names(name):
    assert not core.is_sensitive_name(name)


def test_allow_keys_overrides_a_sensitive_looking_name():
    assert core.is_sensitive_name("PASSWORD_MIN_LENGTH")
    assert not core.is_sensitive_name("PASSWORD_MIN_LENGTH", allow=("PASSWORD_MIN_LENGTH",))


def test_secrets_are_refused_by_name_without_leaking_the_value(project):
    values = {"SITE_NAME": "x", "ADMIN_PASSWORD": "hunter2-hunter2", "API_TOKEN": "tok-123456",
              "DATABASE_URL": "postgres://app:s3cr3t@db/app", "TLS_CERT": "-----BEGIN PRIVATE KEY----- abc"}
    with pytest.raises(HyHomeError) as err:
        core.plan(str(project), values, env_refs=refs_of(project))
    msg = err.value.msg
    for name in ("ADMIN_PASSWORD", "API_TOKEN", "DATABASE_URL", "TLS_CERT"):
        assert name in msg
    for secret in ("hunter2", "tok-123456", "s3cr3t", "BEGIN PRIVATE"):
        assert secret not in msg
    assert "secrets registry" in msg and "_FILE" in msg
    assert not (project / ".env").exists()


def test_secret_in_the_example_itself_is_refused(project):
    example = project / ".env.example"
    example.write_text(example.read_text() + "SMTP_PASSWORD=changeme\n")
    with pytest.raises(HyHomeError, match="SMTP_PASSWORD: the name marks a secret"):
        core.plan(str(project), {}, env_refs=refs_of(project))


def test_empty_sensitive_values_and_file_paths_are_fine(project):
    p = run(project, {"DB_PASSWORD": "", "DB_PASSWORD_FILE": "/run/secrets/db_password",
                      "URL": "https://example.org/path"})
    assert "DB_PASSWORD=" in (project / ".env").read_text().splitlines()
    assert p.content_changed


def test_a_secret_left_in_an_existing_env_is_removed_and_masked_in_diffs(project):
    run(project)
    env = project / ".env"
    before = env.read_text() + "OLD_SECRET=leaked-value\n"
    env.write_text(before)
    p = core.plan(str(project), {}, env_refs=refs_of(project))
    assert p.removed == ["OLD_SECRET"] and p.lost_secrets == ["OLD_SECRET"]
    note = core.lost_secrets_note(p)
    assert "OLD_SECRET" in note and "would be kept under" in note and "leaked-value" not in note
    shown = core.masked(p.before)
    assert "OLD_SECRET=<hidden>" in shown and "leaked-value" not in shown
    core.apply(p)
    assert "leaked-value" not in env.read_text()


# Vendor key shapes, assembled here so the repository holds no literal that a secret scanner (or a
# reader) would take for a live key. None of them is real.
FAKE_KEYS = {
    "aws": "AKIA" + "IOSFODNN7" + "EXAMPLE",
    "aws-temporary": "ASIA" + "Q3EXAMPLE" + "Z1X2C3V",
    "stripe": "sk_" + "live_" + "51HfakeFAKEfake00AbCdEf",
    "stripe-restricted": "rk_" + "live_" + "51HfakeFAKEfake00AbCdEf",
    "stripe-webhook": "whsec_" + "Fake" * 8,
    "github": "ghp_" + "FakeToken0" * 3 + "abcdef",
    "github-fine-grained": "github_pat_" + "11AAAAAAA0" * 3 + "_Fake",
    "gitlab": "glpat-" + "Fake-Token_0123456789",
    "slack": "xoxb-" + "1234567890-0987654321-FakeFakeFake",
    "slack-webhook": "https://hooks.slack.com/" + "services/T000/B000/FakeFakeFake",
    "google": "AIza" + "SyFake" + "x" * 29,
    "openai": "sk-" + "proj-" + "FakeFakeFake" * 3,
    "anthropic": "sk-" + "ant-api03-" + "FakeFakeFake" * 3,
    "npm": "npm_" + "Fake" * 9,
    "sendgrid": "SG." + "FakeFakeFake" * 2 + "." + "FakeFakeFake" * 4,
    "jwt": "eyJ" + "hbGciOiJIUzI1NiJ9" + ".eyJ" + "zdWIiOiIxMjM0NTY3ODkwIn0" + ".Fake_signature",
    "pem": "-----BEGIN " + "OPENSSH PRIVATE KEY-----",
    "url-password": "postgres://app:" + "Pa55-word" + "@db:5432/app",
    "jdbc-url-password": "jdbc:postgresql://app:" + "Pa55-word" + "@db/app",
}


@pytest.mark.parametrize("kind", sorted(FAKE_KEYS))
def test_vendor_key_shapes_are_refused_under_neutral_names(project, kind):
    value = FAKE_KEYS[kind]
    assert core.looks_like_secret_value(value)
    assert core.looks_like_secret_value(f"prefix {value} suffix")           # anywhere in the value
    with pytest.raises(HyHomeError) as err:
        core.plan(str(project), {"SITE_NOTE": value}, env_refs=[])
    assert "SITE_NOTE:" in err.value.msg and value not in err.value.msg and value[6:14] not in err.value.msg
    assert not (project / ".env").exists()


@pytest.mark.parametrize("value", [
    "hyhome.localhost", "https://example.org:8443/path@anchor", "https://user@example.org/", "mask_live_trace",
    "sk-learn-pipeline", "AKIAS", "https://hooks.slack.com/services/...",
    "MYAKIAIOSFODNN7EXAMPLEX", "5d0c1a7e-0e57-4c39-a2b0-7a2e0bb6b1c2",
    "MkU3OEVBNTcwNTJENDM2Qk", "0123456789abcdef0123456789abcdef", "eyJonly.one-part", "1@kafka:9093",
])
def test_ordinary_values_are_not_taken_for_keys(value):
    assert core.looks_like_secret_value(value) is None


def test_validate_credential_rule_reads_the_same_table():
    """One table of secret shapes serves env and validate's credential-literal rule."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_validate import literal_credential

    for value in FAKE_KEYS.values():
        assert literal_credential("SITE_NOTE", value) == core.looks_like_secret_value(value)


def test_log_masking_keeps_secret_values_masked_and_lifts_the_others():
    values = {"SITE_NAME": "lab.example.org", "PORT": 443, "RATIO": 1.5, "ON": True, "NOTE": FAKE_KEYS["jwt"],
              "DB_PASSWORD": "x1", FAKE_KEYS["github"]: "1", "NESTED": {"A": "b"}, "PASSWORD_MIN_LENGTH": "12"}
    secret, plain = core.log_masking(values, ["PASSWORD_MIN_LENGTH"])
    assert secret == {FAKE_KEYS["jwt"], "x1", "1"}
    assert plain == {"lab.example.org", "443", "1.5", "12"}
    assert core.log_masking(["not", "a", "mapping"]) == (set(), set())


# --- what diffs, results and errors show ------------------------------------------------------


HAND_SET = {
    "DATABASE_URL": FAKE_KEYS["url-password"],          # neutral name, password in the URL
    "UPLOAD_ID": FAKE_KEYS["aws"],
    "CI_NOTE": FAKE_KEYS["github"],
    "OLD_PASSWORD": "hunter2-by-hand",                 # sensitive name
}


def hand_set_env(project: Path) -> str:
    run(project)
    env = project / ".env"
    text = (env.read_text() + "".join(f"{k}={v}\n" for k, v in HAND_SET.items())
            + f"# the old one was {FAKE_KEYS['stripe']}\n" + FAKE_KEYS["stripe-restricted"] + "\n")
    env.write_text(text)
    return text


def secrets_in(text: str) -> list[str]:
    values = [*HAND_SET.values(), FAKE_KEYS["stripe"], FAKE_KEYS["stripe-restricted"], "Pa55-word"]
    return [v[:6] for v in values if v in text]


def test_diff_masks_both_sides_by_name_and_by_content(project):
    before = hand_set_env(project)
    p = core.plan(str(project), {"SITE_NAME": "changed"}, env_refs=refs_of(project))
    d = core.diff(p)
    assert d["before_header"] == d["after_header"] == str(project / ".env")
    assert secrets_in(before) and secrets_in(d["before"] + d["after"]) == []
    shown = d["before"].splitlines()
    for key in HAND_SET:
        assert f"{key}=<hidden>" in shown
    assert shown.count(core.HIDDEN_LINE) == 2        # the comment and the token alone on its line
    assert "SITE_NAME=fixture" in shown and "SITE_NAME=changed" in d["after"]   # the rest is readable
    assert d["after"] == p.content                   # nothing secret on the after side: nothing hidden


def test_masking_hides_every_line_of_a_pem_block_and_keeps_export():
    body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
    text = (f"A=1\nexport API_KEY=abc\n{FAKE_KEYS['pem']}\n{body}\n-----END OPENSSH PRIVATE KEY-----\nB=2\n"
            f'C="{FAKE_KEYS["pem"]}\n{body}\n-----END OPENSSH PRIVATE KEY-----"\nD=4\n')
    shown = core.masked(text).splitlines()
    assert shown == ["A=1", "export API_KEY=<hidden>", core.HIDDEN_LINE, core.HIDDEN_LINE, core.HIDDEN_LINE, "B=2",
                     "C=<hidden>", core.HIDDEN_LINE, core.HIDDEN_LINE, "D=4"]
    assert core.masked(None) == ""


def test_a_token_pasted_as_a_name_is_reported_by_line_only(project):
    run(project)
    env = project / ".env"
    env.write_text(env.read_text() + FAKE_KEYS["github"] + "\n")
    number = len(env.read_text().splitlines())
    p = core.plan(str(project), {}, env_refs=refs_of(project))
    assert p.removed == [f"(line {number}: a name that looks like a secret)"]
    assert p.lost_secrets == [f"line {number}"]
    with pytest.raises(HyHomeError) as err:
        core.plan(str(project), {FAKE_KEYS["github"]: "1"}, env_refs=[])
    assert FAKE_KEYS["github"] not in err.value.msg


BAD_LINES = [
    ("just " + FAKE_KEYS["url-password"], "not a KEY=value line"),
    ("A='" + FAKE_KEYS["url-password"], "unterminated ' quote"),
    ('A="x" ' + FAKE_KEYS["url-password"], "unexpected text after the closing quote"),
    ("1" + FAKE_KEYS["aws"] + "=x", "not a valid variable name"),
    (FAKE_KEYS["url-password"] + "=x", "not a valid variable name"),
    ("A=" + FAKE_KEYS["aws"] + "\nA=" + FAKE_KEYS["aws"], "duplicate key, already set on line 2"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_parse_errors_say_file_line_and_kind_never_the_content(project, line, message):
    with pytest.raises(HyHomeError) as err:
        core.parse("# header\n" + line + "\n", "x.env")
    assert err.value.msg.startswith("x.env:") and message in err.value.msg
    assert "\n" not in err.value.msg
    for part in ("Pa55", "IOSFODNN", "postgres", "just"):
        assert part not in err.value.msg
    # the same through plan, from an existing .env and from the example: nothing written
    (project / ".env").write_text("# header\n" + line + "\n")
    with pytest.raises(HyHomeError) as err:
        core.plan(str(project), {}, env_refs=[])
    assert err.value.msg.startswith(".env:") and "Pa55" not in err.value.msg and "IOSFODNN" not in err.value.msg
    assert (project / ".env").read_text() == "# header\n" + line + "\n"


def test_lines_split_at_newline_only_and_crlf_is_read(project):
    lines = core.parse("A=1\r\nB='x\u2028y\x0bz'\r\n# c\nC=3\n")
    assert core.as_dict(lines) == {"A": "1", "B": "x\u2028y\x0bz", "C": "3"}
    assert [ln.number for ln in lines] == [1, 2, 3, 4]
    assert core.as_dict(core.parse("K=" + core.format_value("K", "a\u2028b") + "\n")) == {"K": "a\u2028b"}


# --- backups of hand-set secrets -----------------------------------------------------------------


def test_a_hand_set_secret_is_backed_up_0600_before_it_is_removed(project):
    before = hand_set_env(project)
    env = project / ".env"
    p = core.plan(str(project), {}, env_refs=refs_of(project))
    assert p.lost_secrets == [*HAND_SET, f"line {len(before.splitlines()) - 1}", f"line {len(before.splitlines())}"]
    assert "would be kept under" in core.lost_secrets_note(p)
    assert not (project / ".hyhome").exists()                              # planning writes nothing
    core.apply(p)
    backups = project / ".hyhome" / "env-backups"
    assert [str(backups / n) for n in os.listdir(backups)] == [p.backup_file]
    assert os.path.basename(p.backup_file).startswith(".env.")
    assert Path(p.backup_file).read_text() == before
    assert stat.S_IMODE(os.stat(p.backup_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(backups).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(project / ".hyhome").st_mode) == 0o700
    assert secrets_in(env.read_text()) == []
    note = core.lost_secrets_note(p)
    assert p.backup_file in note and "DATABASE_URL" in note and secrets_in(note) == []
    assert "\n" not in note
    assert not run(project).changed_any                                     # converged: nothing more to keep


def test_each_backup_gets_its_own_name(project):
    paths = []
    for _ in range(2):
        hand_set_env(project)
        p = core.plan(str(project), {}, env_refs=refs_of(project))
        core.apply(p)
        paths.append(p.backup_file)
    assert len(set(paths)) == 2 and all(os.path.isfile(x) for x in paths)


def test_no_backup_when_no_secret_is_lost(project):
    run(project, {"SITE_NAME": "x"})
    env = project / ".env"
    env.write_text(env.read_text() + "STRAY=1\n")
    p = run(project, {"SITE_NAME": "y"})
    assert p.content_changed and p.lost_secrets == [] and p.backup_file is None
    assert core.lost_secrets_note(p) is None and not (project / ".hyhome").exists()


def test_an_unsafe_backup_dir_leaves_env_unchanged(project, tmp_path):
    before = hand_set_env(project)
    (project / ".hyhome").mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, project / ".hyhome" / "env-backups")
    p = core.plan(str(project), {}, env_refs=refs_of(project))
    with pytest.raises(HyHomeError, match=r"cannot back up .* left unchanged: .* not a directory of this user"):
        core.apply(p)
    assert (project / ".env").read_text() == before and os.listdir(elsewhere) == []


# --- hostile file states -------------------------------------------------------------------------


def test_a_hard_linked_env_is_rewritten_not_chmodded(project, tmp_path):
    run(project)
    other = tmp_path / "other"
    os.link(project / ".env", other)
    os.chmod(other, 0o600)                        # the shared inode: .env's mode drifts too
    p = core.plan(str(project), {}, env_refs=refs_of(project))
    assert p.content_changed and any("hard link" in w for w in p.warnings)
    core.apply(p)
    assert stat.S_IMODE(os.stat(other).st_mode) == 0o600 and os.stat(other).st_nlink == 1
    assert stat.S_IMODE(os.stat(project / ".env").st_mode) == 0o640
    assert not run(project).changed_any


def test_a_fifo_or_a_huge_example_is_refused_without_blocking(project):
    example = project / ".env.example"
    os.remove(example)
    os.mkfifo(example)
    with pytest.raises(HyHomeError, match="not a regular file"):
        core.plan(str(project), {}, env_refs=[])
    os.remove(example)
    example.write_bytes(b"A=1\n" * (core.MAX_ENV_BYTES // 4 + 1))
    with pytest.raises(HyHomeError, match="larger than 1024 KiB"):
        core.plan(str(project), {}, env_refs=[])


# --- required variables ------------------------------------------------------------------------


def test_compose_refs_come_from_every_included_file(project):
    refs = refs_of(project)
    names = {(r.name, r.has_default, r.required) for r in refs}
    assert ("SITE_NAME", False, True) in names
    assert ("SITE_TAGLINE", False, False) in names
    assert ("WORKER_QUEUE", False, True) in names          # from sub/compose.yaml
    assert ("WEB_PORT", True, False) in names and ("LOG_LEVEL", True, False) in names
    assert "HOME" not in {r.name for r in refs}            # $${HOME} is for the container shell


def test_missing_required_variables_are_all_listed_with_their_files(project):
    (project / ".env.example").write_text("# nothing here\n")
    with pytest.raises(HyHomeError) as err:
        core.plan(str(project), {"WORKER_QUEUE": ""}, env_refs=refs_of(project))
    msg = err.value.msg
    assert "SITE_NAME: not defined; a non-empty value is required" in msg
    assert "SITE_TAGLINE: not defined; referenced without a default" in msg
    assert "WORKER_QUEUE: empty; a non-empty value is required" in msg
    assert "sub/compose.yaml:4" in msg and "compose.yaml:9" in msg
    assert "WEB_PORT" not in msg and "LOG_LEVEL" not in msg
    assert not (project / ".env").exists()


def test_required_option_names_must_be_non_empty(project):
    refs = core.required_refs(["BACKUP_TARGET"])
    expected = r"BACKUP_TARGET: not defined; a non-empty value is required \(required option\)"
    with pytest.raises(HyHomeError, match=expected) as err:
        core.plan(str(project), {}, env_refs=refs)
    assert "env_allow_empty" not in err.value.msg     # no use for a variable that must have a value
    assert not core.plan(str(project), {"BACKUP_TARGET": "nas"}, env_refs=refs).warnings


def test_missing_required_counts_the_environment_when_given():
    refs = [EnvRef("A", False, True, Location("c.yaml", 3)), EnvRef("B", False, False, Location("c.yaml", 4))]
    assert core.missing_required({}, refs, environ={"A": "1", "B": "x"}) == []
    assert core.missing_required({"A": None}, refs, environ={}) == [
        "A: empty; a non-empty value is required (c.yaml:3)",
        "B: not defined; referenced without a default, so Compose would substitute an empty string (c.yaml:4)",
    ]


# --- required but empty, allowed empty, generated identifiers -----------------------------------


def kafka_project(tmp_path, example: str) -> Path:
    """A project whose broker needs a cluster id and a controller URL, both without a default."""
    d = tmp_path / "kafka"
    d.mkdir()
    (d / "compose.yaml").write_text(
        "services:\n"
        "  kafka:\n"
        "    image: apache/kafka:3.7.0\n"
        "    environment:\n"
        "      CLUSTER_ID: ${KAFKA_CLUSTER_ID}\n"
        "      KAFKA_CONTROLLER_QUORUM_VOTERS: $KAFKA_VOTERS\n"
        "      KAFKA_LOG_DIRS: ${KAFKA_LOG_DIRS-/var/lib/kafka/data}\n"
        "      EXTRA_FLAG: ${KAFKA_DEBUG:+--debug}\n"
        "      KAFKA_OPTS: ${KAFKA_OPTS}\n")
    (d / ".env.example").write_text(example)
    return d


EXAMPLE = "# broker\nKAFKA_CLUSTER_ID=\nKAFKA_VOTERS=\nKAFKA_OPTS=\n"


def test_required_but_empty_variables_block_and_name_where_to_set_them(tmp_path):
    d = kafka_project(tmp_path, EXAMPLE)
    with pytest.raises(HyHomeError) as err:
        core.plan(str(d), {}, env_refs=refs_of(d))
    msg = err.value.msg
    assert "would leave undefined or empty" in msg
    assert ("KAFKA_CLUSTER_ID: empty; referenced without a default, so Compose would substitute an empty string "
            f"({d}/compose.yaml:5)") in msg
    assert f"KAFKA_VOTERS: empty; referenced without a default, so Compose would substitute an empty string " \
           f"({d}/compose.yaml:6)" in msg                                 # the bare $VAR form too
    assert "KAFKA_LOG_DIRS" not in msg and "KAFKA_DEBUG" not in msg     # ${X-d} and ${X:+alt} need no value
    assert "env_values" in msg and "env_generated" in msg and "kafka-cluster-id" in msg
    assert "env_allow_empty" in msg
    assert not (d / ".env").exists()


def test_allow_empty_lets_a_variable_stay_empty_and_defines_it_when_the_example_lacks_it(tmp_path):
    d = kafka_project(tmp_path, "KAFKA_CLUSTER_ID=abc\nKAFKA_VOTERS=1@kafka:9093\n")
    p = run(d, {}, allow_empty=["KAFKA_OPTS"])
    assert "KAFKA_OPTS=" in (d / ".env").read_text().splitlines() and "KAFKA_OPTS" in p.added
    assert not run(d, {}, allow_empty=["KAFKA_OPTS"]).changed_any
    # a ${X:?} reference still needs a value, listed or not
    refs = [EnvRef("KAFKA_OPTS", False, True, Location("c.yaml", 1))]
    with pytest.raises(HyHomeError, match="KAFKA_OPTS: empty; a non-empty value is required"):
        core.plan(str(d), {}, env_refs=refs, allow_empty=["KAFKA_OPTS"])
    with pytest.raises(HyHomeError, match="allow_empty must be a list"):
        core.plan(str(d), {}, env_refs=[], allow_empty="KAFKA_OPTS")


def test_a_value_set_by_hand_in_env_is_named_when_it_is_not_kept(tmp_path):
    d = kafka_project(tmp_path, EXAMPLE)
    (d / ".env").write_text("KAFKA_CLUSTER_ID=set-by-hand\n")
    with pytest.raises(HyHomeError, match=r"KAFKA_CLUSTER_ID: empty;.*the value set by hand in \.env is not kept"):
        core.plan(str(d), {"KAFKA_VOTERS": "1@kafka:9093"}, env_refs=refs_of(d), allow_empty=["KAFKA_OPTS"])


@pytest.mark.parametrize(("kind", "pattern"), [
    ("uuid", r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
    ("hex", r"[0-9a-f]{32}"),
    ("kafka-cluster-id", r"[A-Za-z0-9_][A-Za-z0-9_-]{21}"),
])
def test_generated_kinds_have_their_shape_and_differ(kind, pattern):
    values = {core.generate_identifier(kind) for _ in range(50)}
    assert len(values) == 50 and all(re.fullmatch(pattern, v) for v in values)


def test_kafka_cluster_id_is_a_base64url_uuid():
    value = core.generate_identifier("kafka-cluster-id")
    raw = base64.urlsafe_b64decode(value + "==")
    assert len(raw) == 16 and raw[6] >> 4 == 4      # a version-4 uuid, as `kafka-storage random-uuid`


def test_kafka_cluster_id_never_starts_with_a_dash(monkeypatch):
    dash_first = uuid.UUID(bytes=b"\xf8" + b"\x00" * 15)     # base64url "-A..."
    ok = uuid.UUID(int=1 << 100)
    seq = iter([dash_first, ok])
    monkeypatch.setattr(core.uuid, "uuid4", lambda: next(seq))
    assert core.generate_identifier("kafka-cluster-id") == core.base64.urlsafe_b64encode(ok.bytes).decode()[:22]


def test_generated_identifiers_are_made_once_and_kept(tmp_path):
    d = kafka_project(tmp_path, EXAMPLE)
    gen = {"KAFKA_CLUSTER_ID": "kafka-cluster-id"}
    kw = {"generated": gen, "allow_empty": ["KAFKA_OPTS"]}
    check = core.plan(str(d), {"KAFKA_VOTERS": "1@kafka:9093"}, env_refs=refs_of(d), **kw)
    assert check.generated == ["KAFKA_CLUSTER_ID"] and not (d / ".env").exists()   # planning writes nothing
    first = run(d, {"KAFKA_VOTERS": "1@kafka:9093"}, **kw)
    assert first.generated == ["KAFKA_CLUSTER_ID"]
    value = core.as_dict(core.parse((d / ".env").read_text()))["KAFKA_CLUSTER_ID"]
    assert len(value) == 22
    second = run(d, {"KAFKA_VOTERS": "1@kafka:9093"}, **kw)
    assert not second.changed_any and second.generated == []
    assert core.as_dict(core.parse((d / ".env").read_text()))["KAFKA_CLUSTER_ID"] == value


def test_an_existing_value_is_kept_even_when_it_has_another_shape(tmp_path):
    d = kafka_project(tmp_path, EXAMPLE)
    (d / ".env").write_text("KAFKA_CLUSTER_ID=legacy-id\n")
    p = run(d, {"KAFKA_VOTERS": "v"}, generated={"KAFKA_CLUSTER_ID": "kafka-cluster-id"},
            allow_empty=["KAFKA_OPTS"])
    assert p.generated == [] and "KAFKA_CLUSTER_ID=legacy-id" in (d / ".env").read_text()
    assert p.warnings == ["KAFKA_CLUSTER_ID: kept the value already in .env, although it does not look like a "
                          "kafka-cluster-id"]


@pytest.mark.parametrize(("generated", "values", "message"), [
    ({"KAFKA_CLUSTER_ID": "random"}, {}, r"KAFKA_CLUSTER_ID: unknown kind 'random'"),
    ({"ADMIN_TOKEN": "hex"}, {}, r"ADMIN_TOKEN: the name marks a secret"),
    ({"DB_PASSWORD": "uuid"}, {}, r"DB_PASSWORD: the name marks a secret"),
    ({"KAFKA_CLUSTER_ID": "uuid"}, {"KAFKA_CLUSTER_ID": "x"}, r"also set in env_values"),
    ({"BAD NAME": "uuid"}, {}, r"not a valid variable name"),
    (["KAFKA_CLUSTER_ID"], {}, r"must be a mapping"),
])
def test_generated_bad_input_is_refused(tmp_path, generated, values, message):
    d = kafka_project(tmp_path, EXAMPLE)
    with pytest.raises(HyHomeError, match=message):
        core.plan(str(d), values, env_refs=[], generated=generated)
    assert not (d / ".env").exists()


def test_generated_sensitive_looking_name_allowed_when_listed(tmp_path):
    d = kafka_project(tmp_path, EXAMPLE)
    p = core.plan(str(d), {}, env_refs=[], generated={"NODE_KEY": "hex"}, allow=("NODE_KEY",))
    assert p.generated == ["NODE_KEY"]


# --- bad input ---------------------------------------------------------------------------------


def test_bad_project_dir(tmp_path):
    with pytest.raises(HyHomeError, match="does not exist"):
        core.plan(str(tmp_path / "nope"), {}, env_refs=[])
    with pytest.raises(HyHomeError, match="no project directory"):
        core.plan("", {}, env_refs=[])
    with pytest.raises(HyHomeError, match="system directory"):
        core.plan("/etc", {}, env_refs=[])


def test_dest_outside_the_project_or_symlinked_is_refused(project, tmp_path):
    with pytest.raises(HyHomeError, match="outside"):
        core.plan(str(project), {}, dest="../elsewhere.env", env_refs=[])
    target = tmp_path / "target.env"
    target.write_text("")
    os.symlink(target, project / ".env")
    with pytest.raises(HyHomeError, match="symlink"):
        core.plan(str(project), {}, env_refs=[])


def test_invalid_names_and_unreadable_examples(project):
    with pytest.raises(HyHomeError, match="not a valid variable name"):
        core.plan(str(project), {"BAD NAME": "x"}, env_refs=[])
    (project / ".env.example").write_bytes(b"A=\xff\xfe\n")
    with pytest.raises(HyHomeError, match="not UTF-8"):
        core.plan(str(project), {}, env_refs=[])
    os.remove(project / ".env.example")
    os.mkdir(project / ".env.example")
    with pytest.raises(HyHomeError, match="is a directory"):
        core.plan(str(project), {}, env_refs=[])


def test_values_must_be_a_mapping(project):
    with pytest.raises(HyHomeError, match="mapping"):
        core.plan(str(project), ["A=1"], env_refs=[])


def test_not_a_compose_project_for_refs(tmp_path):
    with pytest.raises(HyHomeError):
        core.compose_env_refs(str(tmp_path))


# --- the embedded stack ------------------------------------------------------------------------


def test_embedded_stack_example_is_complete_and_secret_free(tmp_path):
    """The shipped .env.example alone satisfies every reference of the default stack."""
    copy = tmp_path / "stack"
    shutil.copytree(STACK, copy, ignore=shutil.ignore_patterns("secrets", "data", ".env"))
    refs, _ = core.compose_env_refs(str(copy))
    p = core.plan(str(copy), {}, env_refs=refs)
    values = core.as_dict(core.parse(p.content))
    assert values["HYHOME_DOMAIN"] == "hyhome.localhost"
    assert core.secret_problems(values) == []


# --- the module and the role through ansible-playbook -vvv --------------------------------------

VVV_PLAY = """
- name: env_file, verbosely
  hosts: all
  gather_facts: false
  vars:
    hyhome_env_file: ""
    hyhome_compose_files: []
  tasks:
    - name: Refused values under neutral names, module
      block:
        - name: Env file module
          hyhome.bootstrap.env_file:
            project_dir: "{{ project }}"
            values: "{{ refused }}"
      rescue:
        - name: Keep the refusal
          ansible.builtin.set_fact:
            module_refusal: "{{ ansible_failed_result.msg }}"
    - name: Refused values under neutral names, role
      block:
        - name: Env role
          ansible.builtin.include_role:
            name: hyhome.bootstrap.env
          vars:
            env_project_dir: "{{ project }}"
            env_values: "{{ refused }}"
      rescue:
        - name: Keep the refusal
          ansible.builtin.set_fact:
            role_refusal: "{{ ansible_failed_result.msg }}"
    - name: Preview over a .env holding hand-set secrets
      hyhome.bootstrap.env_file:
        project_dir: "{{ project }}"
        values: {SITE_NAME: lab.example.org}
      check_mode: true
      diff: true
      register: preview
    - name: Real run, through the role
      ansible.builtin.include_role:
        name: hyhome.bootstrap.env
      vars:
        env_project_dir: "{{ project }}"
        env_values: {SITE_NAME: lab.example.org}
    - name: Results, for the test to read
      ansible.builtin.copy:
        content: "{{ {'module': module_refusal, 'role': role_refusal, 'pending': preview.pending,
          'backup': env_result.backup_file} | to_json }}"
        dest: "{{ results_file }}"
        mode: "0600"
"""


@pytest.mark.slow
def test_no_refused_or_hand_set_value_in_vvv_output(tmp_path):
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    project = tmp_path / "project"
    project.mkdir()
    (project / "compose.yaml").write_text(
        "services:\n  web:\n    image: hyhome/busybox:local\n    environment:\n      SITE: ${SITE_NAME}\n")
    (project / ".env.example").write_text("SITE_NAME=fixture\n")
    env_text = "".join(f"{k}={v}\n" for k, v in HAND_SET.items()) + f"# was {FAKE_KEYS['stripe']}\n"
    (project / ".env").write_text(env_text)
    refused = {f"NOTE_{i}": v for i, v in enumerate(FAKE_KEYS.values())} | {"SITE_NAME": "lab.example.org"}
    (tmp_path / "vars.yml").write_text(json.dumps({"refused": refused, "project": str(project),
                                                   "results_file": str(tmp_path / "results.json")}))
    (tmp_path / "play.yml").write_text(VVV_PLAY)
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "ANSIBLE_CONFIG": str(repo / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "false", "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [os.path.join(bindir, "ansible-playbook"), "-vvv", "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{tmp_path / 'vars.yml'}",
         str(tmp_path / "play.yml")],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    secrets = [*FAKE_KEYS.values(), *HAND_SET.values(), "Pa55-word", "IOSFODNN7"]
    leaked = [v[:6] + "..." for v in secrets if v in out]
    assert leaked == [], f"{len(leaked)} value(s) appear in the -vvv output"

    results = json.loads((tmp_path / "results.json").read_text())
    for refusal in (results["module"], results["role"]):
        assert refusal.startswith("refusing to write secrets to .env")
        assert all(f"NOTE_{i}:" in refusal for i in range(len(FAKE_KEYS)))
    assert results["pending"]["SITE_NAME"] == "lab.example.org"      # non-secret values stay readable
    assert "SITE_NAME: lab.example.org" in out                       # in the -vvv invocation too
    assert "DATABASE_URL=<hidden>" in out and "UPLOAD_ID=<hidden>" in out      # the masked diff
    assert "would be kept under" in out and "DATABASE_URL" in out
    backup = Path(results["backup"])
    assert backup.parent == project / ".hyhome" / "env-backups" and backup.read_text() == env_text
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert f"the previous file is kept in {backup}" in out
    assert core.as_dict(core.parse((project / ".env").read_text())) == {"SITE_NAME": "lab.example.org"}
