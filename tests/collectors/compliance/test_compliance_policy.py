"""The policy format: validation errors name file, check and key; the shipped default policy is complete."""

from __future__ import annotations

import re

import pytest
from hostmond.collectors.compliance.checks import EVALUATORS
from hostmond.collectors.compliance.policy import KINDS, PolicyError, default_policy_path, load_policy, parse_policy

HEAD = '[policy]\nname = "p"\ntitle = "t"\nversion = "1"\n'
COMMON = 'title = "t"\nseverity = "high"\nrationale = "r"\nremediation = "x"\n'


def _one(body: str) -> str:
    return HEAD + '[[check]]\nid = "c1"\n' + COMMON + body


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[policy\n", "f.toml: not valid TOML"),
        ('[[check]]\nid = "a"\n', "f.toml: policy: a [policy] table"),
        (HEAD, "f.toml: check: a policy needs at least one [[check]] table"),
        (HEAD + '[[check]]\nid = "Bad Id"\n', "f.toml: check[0].id: required, letters"),
        (_one('kind = "nope"\n'), "f.toml: check c1: kind: unknown kind 'nope'"),
        (_one('kind = "sysctl"\nkey = "kernel.x"\nop = "eq"\n'), "f.toml: check c1: value: required for kind 'sysctl'"),
        (_one('kind = "sysctl"\nkey = "kernel.x"\nop = "eq"\nvalue = 1\ncolour = "red"\n'), "f.toml: check c1: colour: unknown key for kind 'sysctl'"),
        (_one('kind = "sysctl"\nkey = "kernel.x"\nop = "about"\nvalue = 1\n'), "f.toml: check c1: op: must be one of eq, ne"),
        (_one('kind = "sysctl"\nkey = "kernel.x"\nop = "in"\nvalue = 1\n'), "f.toml: check c1: value: op 'in' needs a list value"),
        (_one('kind = "file_mode"\npath = "etc/passwd"\nmax_mode = "0644"\n'), "f.toml: check c1: path: paths are absolute"),
        (_one('kind = "file_mode"\npath = "/etc/../x"\nmax_mode = "0644"\n'), "f.toml: check c1: path: paths are absolute and without '..'"),
        (_one('kind = "file_mode"\npath = "/etc/x"\nmax_mode = "rw-r--r--"\n'), "f.toml: check c1: max_mode: expected octal mode string"),
        (_one('kind = "file_content"\npaths = ["/etc/x"]\npattern = "(("\nexpect = "match"\n'), "f.toml: check c1: pattern: invalid regular expression"),
        (_one('kind = "file_content"\npaths = ["/etc/x"]\npattern = "a"\nexpect = "maybe"\n'), "f.toml: check c1: expect: must be one of match, no_match"),
        (_one('kind = "dir_scan"\nroots = ["/usr"]\nfind = "suid"\nmax_entries = 0\n'), "f.toml: check c1: max_entries: expected integer"),
        (_one('kind = "file_exists"\npath = "/x"\napplies_to = ["windows"]\n'), "f.toml: check c1: applies_to: expected a list of OS families"),
        (_one('kind = "file_exists"\npath = "/x"\n').replace('severity = "high"', 'severity = "urgent"'), "f.toml: check c1: severity: must be one of"),
        (_one('kind = "file_exists"\npath = "/x"\n').replace('rationale = "r"\n', ""), "f.toml: check c1: rationale: required key is missing"),
        (_one('kind = "file_exists"\npath = "/x"\n') + '[[check]]\nid = "c1"\n' + COMMON + 'kind = "file_absent"\npath = "/y"\n', "f.toml: check c1: id: duplicate check id"),
    ],
)
def test_bad_policy_is_refused_naming_file_check_and_key(text, message):
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "f.toml")
    assert str(e.value).startswith(message), str(e.value)


def test_unreadable_policy_file_names_the_file(tmp_path):
    with pytest.raises(PolicyError, match=r"missing\.toml: cannot read"):
        load_policy(str(tmp_path / "missing.toml"))


def test_a_valid_policy_parses_into_typed_checks():
    p = parse_policy(_one('cis = "1.2"\ncis_title = "Ensure x"\napplies_to = ["rhel"]\nkind = "sysctl"\nkey = "kernel.x"\nop = "in"\nvalue = [1, 2]\n'), "f.toml")
    (c,) = p.checks
    assert (p.name, c.id, c.kind, c.cis, c.applies_to, dict(c.params)) == ("p", "c1", "sysctl", "1.2", ("rhel",), {"key": "kernel.x", "op": "in", "value": [1, 2]})


def test_every_kind_has_an_evaluator():
    assert set(KINDS) == set(EVALUATORS)


def test_default_policy_has_40_or_more_documented_checks_covering_the_required_areas():
    p = load_policy(default_policy_path())
    assert p.name == "default" and len(p.checks) >= 40
    for c in p.checks:
        assert len(c.title) > 10 and len(c.rationale) > 30 and len(c.remediation) > 10, c.id
        if c.cis:
            assert re.fullmatch(r"\d+(\.\d+)+", c.cis) and c.cis_title.startswith(("Ensure", "Disable", "Audit")), c.id
        else:  # no CIS section: the rationale says where the control comes from
            assert re.search(r"CIS|KSPP|PCI|NIST", c.rationale), c.id
    assert len([c for c in p.checks if c.cis]) >= 40
    ids = {c.id for c in p.checks}
    required = {
        "ssh_root_login", "ssh_password_auth", "ssh_empty_passwords", "ssh_protocol", "ssh_ciphers", "ssh_max_auth_tries",
        "ssh_idle_timeout", "pam_pwquality_debian", "pam_pwquality_rhel", "pam_lockout_debian", "pam_lockout_rhel",
        "passwd_perms", "shadow_perms", "group_perms", "shadow_no_empty_hash", "uid0_only_root", "sysctl_accept_redirects",
        "sysctl_source_route", "sysctl_syncookies", "sysctl_rp_filter", "sysctl_aslr", "sysctl_ptrace_scope",
        "sysctl_dmesg_restrict", "sysctl_kptr_restrict", "core_dumps_limited", "tmp_mount_options", "auditd_active",
        "time_sync_active", "firewall_installed", "unattended_upgrades_debian", "unattended_upgrades_rhel",
        "world_writable_system_files", "unexpected_suid",
    }
    assert required <= ids, required - ids
    kinds = {c.kind for c in p.checks}
    assert kinds == set(KINDS) - {"file_exists", "file_absent"}, set(KINDS) - kinds


def test_docs_list_every_default_check_and_every_lynis_pair():
    from pathlib import Path

    from lynis_pairs import PAIRS

    doc = (Path(__file__).resolve().parents[3] / "docs" / "compliance.md").read_text()
    for c in load_policy(default_policy_path()).checks:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{c.id}` | {c.severity} | {c.kind} |")), None)
        assert row is not None, f"docs/compliance.md has no row for {c.id}"
        assert (f"| {c.cis} {c.cis_title} |" if c.cis else "| none (see rationale) |") in row, c.id
    for p in PAIRS:
        assert f"| `{p.check}` | `{p.lynis}` |" in doc, p
        if p.may_differ:
            assert p.may_differ in doc, p.check


def test_the_package_and_its_default_policy_are_in_the_distribution():
    import tomllib
    from pathlib import Path

    py = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    st = py["tool"]["setuptools"]
    assert "hostmond.collectors.compliance" in st["packages"]
    assert "policies/*.toml" in st["package-data"]["hostmond.collectors.compliance"]
    assert py["project"]["entry-points"]["hostmon.collectors"]["compliance"] == "hostmond.collectors.compliance:ComplianceCollector"
