from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from hostmond.agent.config import load_dataclass
from hostmond.agent.tenancy import (
    Tenancy,
    TenantRule,
    container_id_from_cgroup,
    validate_tenant_id,
)

from hostmond.core.errors import ConfigError

HEX = "0123456789abcdef" * 4  # 64 hex digits


@pytest.mark.parametrize("good", ["default", "acme-prod", "team_a.eu-1", "x" * 64, "A9"])
def test_validate_tenant_id_accepts_safe_label_values(good: str) -> None:
    assert validate_tenant_id(good) == good


@pytest.mark.parametrize("bad", ["", "x" * 65, "a b", 'a"b', "a\nb", "tenant/1", "ümlaut", "a{b}"])
def test_validate_tenant_id_rejects_unsafe_values(bad: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        validate_tenant_id(bad)


@pytest.mark.parametrize(
    "text",
    [
        f"0::/system.slice/docker-{HEX}.scope\n",
        f"12:memory:/docker/{HEX}\n11:cpu:/docker/{HEX}\n",
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{HEX}.scope\n",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2.slice/crio-{HEX}.scope\n",
        f"0::/kubepods/burstable/pod5e3b4f2c-1111-2222-3333-444455556666/{HEX}\n",
        f"0::/machine.slice/libpod-{HEX}.scope/container\n",
    ],
)
def test_container_id_from_runtime_cgroup_paths(text: str) -> None:
    assert container_id_from_cgroup(text) == HEX


@pytest.mark.parametrize(
    "text",
    ["0::/user.slice/user-1000.slice/session-2.scope\n", "0::/\n", f"0::/kubepods.slice/crio-conmon-{HEX}.scope\n", ""],
)
def test_no_container_id_outside_containers(text: str) -> None:
    assert container_id_from_cgroup(text) is None


def test_rule_needs_at_least_one_matcher() -> None:
    with pytest.raises(ValueError, match="at least one of users, cgroup_regex, container_id_regex"):
        TenantRule(tenant_id="t")


def test_bad_regex_is_a_clear_error_at_load() -> None:
    with pytest.raises(ValueError, match=r"cgroup_regex '\(' is not a valid regular expression"):
        TenantRule(tenant_id="t", cgroup_regex="(")
    with pytest.raises(ValueError, match="container_id_regex"):
        TenantRule(tenant_id="t", container_id_regex="[")


def test_config_errors_name_file_and_key() -> None:
    with pytest.raises(ConfigError) as e:
        load_dataclass({"tenant_id": "t", "cgroup_regex": "("}, TenantRule, "/etc/hostmon.toml", "tenant_rules[1]")
    assert e.value.file == "/etc/hostmon.toml" and e.value.key == "tenant_rules[1].cgroup_regex"
    with pytest.raises(ConfigError) as e:
        load_dataclass({"tenant_id": "bad id", "users": ["root"]}, TenantRule, "/etc/hostmon.toml", "tenant_rules[0]")
    assert e.value.key == "tenant_rules[0].tenant_id"
    with pytest.raises(ConfigError, match="at least one of"):
        load_dataclass({"tenant_id": "t"}, TenantRule, "/etc/hostmon.toml", "tenant_rules[0]")
    with pytest.raises(ValueError):
        Tenancy([], "bad tenant")


def test_users_by_name_and_uid() -> None:
    root = pwd.getpwuid(0).pw_name
    t = Tenancy([TenantRule(tenant_id="ops", users=[root]), TenantRule(tenant_id="svc", users=["1234"])], "dflt")
    never = lambda: pytest.fail("cgroup must not be read for user-only rules")
    assert t.tenant_for(0, never) == "ops"
    assert t.tenant_for(1234, never) == "svc"
    assert t.tenant_for(4321, never) == "dflt"


def test_unknown_user_name_does_not_fail_and_matches_nothing() -> None:
    t = Tenancy([TenantRule(tenant_id="ghost", users=["no-such-user-hostmon"])], "dflt")
    assert t.tenant_for(0, lambda: None) == "dflt"


def test_first_match_wins_and_all_matchers_of_a_rule_must_match() -> None:
    docker = f"0::/system.slice/docker-{HEX}.scope\n"
    rules = [
        TenantRule(tenant_id="web-root", users=["0"], container_id_regex="^0123"),
        TenantRule(tenant_id="web", container_id_regex="^0123"),
        TenantRule(tenant_id="docker-any", cgroup_regex=r"/docker-"),
    ]
    t = Tenancy(rules, "dflt")
    assert t.tenant_for(0, lambda: docker) == "web-root"
    assert t.tenant_for(1000, lambda: docker) == "web"  # user matcher fails for the first rule
    other = f"0::/system.slice/docker-{'f' * 64}.scope\n"
    assert t.tenant_for(1000, lambda: other) == "docker-any"
    assert t.tenant_for(1000, lambda: "0::/user.slice\n") == "dflt"
    assert t.tenant_for(1000, lambda: None) == "dflt"  # process gone: cgroup unreadable


def test_cgroup_is_read_lazily_and_at_most_once() -> None:
    calls: list[int] = []

    def reader() -> str:
        calls.append(1)
        return "0::/kubepods/x\n"

    t = Tenancy(
        [
            TenantRule(tenant_id="root", users=["0"]),
            TenantRule(tenant_id="k", cgroup_regex="^/nomatch"),
            TenantRule(tenant_id="k2", container_id_regex="^ab"),
            TenantRule(tenant_id="k3", cgroup_regex="^/kubepods/"),
        ],
        "dflt",
    )
    assert t.tenant_for(0, reader) == "root" and calls == []  # decided before any cgroup rule
    assert t.tenant_for(1000, reader) == "k3" and calls == [1]  # three cgroup rules, one read
    assert t.needs_cgroup
    assert not Tenancy([TenantRule(tenant_id="a", users=["0"])], "d").needs_cgroup


def test_cgroup_v1_multiple_hierarchies_any_path_matches() -> None:
    text = "12:pids:/\n4:memory:/tenants/blue/job7\n1:name=systemd:/\n"
    t = Tenancy([TenantRule(tenant_id="blue", cgroup_regex=r"^/tenants/blue/")], "d")
    assert t.tenant_for(5, lambda: text) == "blue"


def test_real_cgroup_of_this_process() -> None:
    text = Path(f"/proc/{os.getpid()}/cgroup").read_text()
    path = text.splitlines()[-1].split(":", 2)[2]
    t = Tenancy([TenantRule(tenant_id="mine", cgroup_regex="^" + path.replace(".", r"\.") + "$")], "d")
    assert t.tenant_for(os.getuid(), lambda: Path(f"/proc/{os.getpid()}/cgroup").read_text()) == "mine"
