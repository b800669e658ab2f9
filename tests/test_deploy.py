"""
The deployment recipes in examples/deploy/, checked offline: the Kubernetes
manifests against the API's schemas (kubernetes-validate; there is no
kubectl here), and against what twistcluster needs of them; the HAProxy
configuration by HAProxy itself where it is installed (it runs for real in
tests.test_haproxy).
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests._cluster import PROJECT
from tests._haproxy import EXAMPLE, exampleConfig, haproxyPath
from twistcluster._cli.options import Options

DEPLOY = PROJECT / "examples" / "deploy"
MANIFESTS = DEPLOY / "kubernetes.yaml"


def resources(path: Path = MANIFESTS) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_manifests_validate():
    """
    Every manifest is valid for the newest Kubernetes API the validator
    knows, strictly (no field the API does not have).
    """
    kinds = []
    for resource in resources():
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)
        kinds.append(resource["kind"])
    assert sorted(kinds) == ["Deployment", "Service"]


#: What the master takes when an option is not given.
DEFAULTS = {"drain-delay": "0", "shutdown-timeout": "30"}


def clusterOptions(container: dict) -> dict[str, str]:
    """
    The container's C{twist cluster} options, written C{--name=value} in the
    manifest, then FACTORY.
    """
    assert container["command"] == ["twist", "cluster"]
    *options, factory = container["args"]
    parsed = dict(DEFAULTS, factory=factory)
    for option in options:
        name, equals, value = option.partition("=")
        assert name.startswith("--") and equals and value, option
        parsed[name[2:]] = value
    return parsed


@pytest.mark.skipif(
    "metrics" not in [option[0] for option in Options.optParameters],
    reason="--metrics (the cockpit, issue 15) is not there yet",
)
def test_the_command_line_is_the_masters():
    """
    The container's arguments parse as the master's own options, to the same
    values (FACTORY is the user's, not loaded here).
    """

    class Parsed(Options):
        def postOptions(self) -> None:
            pass

    _, container = deployment()
    parsed = Parsed()
    parsed.parseOptions(container["args"])
    for name, value in clusterOptions(container).items():
        if name == "listen":
            assert parsed["listen"] == [value]
        else:
            assert str(parsed[name]) == value, name


def portNumber(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def deployment() -> tuple[dict, dict]:
    [spec] = [r["spec"]["template"]["spec"] for r in resources() if r["kind"] == "Deployment"]
    [container] = spec["containers"]
    return spec, container


def test_probes_reach_the_metrics_endpoint():
    """
    Readiness on /healthz and liveness on /livez, both on --metrics' port,
    which listens on the pod's address (every interface), not on loopback
    where the kubelet cannot reach it.
    """
    from twistcluster._common.endpoints import specFromDescription

    _, container = deployment()
    options = clusterOptions(container)
    metrics = specFromDescription(options["metrics"])
    assert metrics.address in ("", "0.0.0.0", "::")
    assert not metrics.address or not ipaddress.ip_address(metrics.address).is_loopback
    for probe, path in (("readinessProbe", "/healthz"), ("livenessProbe", "/livez")):
        check = container[probe]["httpGet"]
        assert check["path"] == path
        assert portNumber(container, check["port"]) == metrics.port
    assert portNumber(container, "http") == specFromDescription(options["listen"]).port


def test_grace_period():
    """
    The kubelet waits longer than the drain delay plus the shutdown timeout
    before its SIGKILL, and nothing needs a preStop hook.
    """
    spec, container = deployment()
    options = clusterOptions(container)
    drainDelay, shutdownTimeout = float(options["drain-delay"]), float(options["shutdown-timeout"])
    assert drainDelay > 0
    assert spec["terminationGracePeriodSeconds"] > drainDelay + shutdownTimeout
    assert "lifecycle" not in container


def test_service_targets_the_listen():
    [service] = [r for r in resources() if r["kind"] == "Service"]
    [port] = service["spec"]["ports"]
    _, container = deployment()
    assert portNumber(container, port["targetPort"]) == 8080
    [deploymentResource] = [r for r in resources() if r["kind"] == "Deployment"]
    assert service["spec"]["selector"] == deploymentResource["spec"]["selector"]["matchLabels"]


@pytest.mark.skipif(
    haproxyPath() is None, reason="haproxy is not installed (Debian: apt-get install haproxy)"
)
@pytest.mark.parametrize("which", ["example", "test"])
def test_haproxy_config_is_valid(tmp_path, which):
    """
    haproxy -c accepts the example as it is, and as the tests rewrite it.
    """
    config = tmp_path / "haproxy.cfg"
    if which == "example":
        # Its global section names a log socket and a stats socket directory that may not exist.
        text = EXAMPLE.read_text().replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
        config.write_text(text)
    else:
        from tests._haproxy import Server

        text = exampleConfig([Server("a", 1000, 1001, 1002), Server("b", 2000)])
        config.write_text(text.replace("{frontend}", "127.0.0.1:1"))
    result = subprocess.run(
        [haproxyPath(), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
