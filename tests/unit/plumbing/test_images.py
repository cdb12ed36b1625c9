"""The runtime command of an image container and the parsing of the runtime's JSON. Pure."""

from __future__ import annotations

import shlex
from pathlib import Path

from plumbing.images import by_name, parse_ps, read_cid, run_command, with_run_commands
from sbcore.model.image import ImageRun
from sbcore.plan.hostplan import ContainerPlan, TopologyPlan


def _container(image: ImageRun | None) -> ContainerPlan:
    return ContainerPlan(topology="shop", name="web", netns="sb-shop-web", command=None,
                         attach_pid=None, endpoints=(), image=image)


SPEC = ImageRun("localhost/demo:1", ("httpd", "-f", "-p", "80"), (("A", "b c"),),
                ("/srv/data:/data:ro",), "/data", "1000")


def test_the_run_command_joins_the_namespace_with_its_resolver_and_labels() -> None:
    argv = shlex.split(run_command("podman", _container(SPEC), "sb-"))
    assert argv[:4] == ["exec", "podman", "run", "--rm"]
    pairs = {(a, b) for a, b in zip(argv, argv[1:], strict=False)}
    assert ("--name", "sb-shop-web") in pairs
    assert ("--network", "ns:/var/run/netns/sb-shop-web") in pairs
    assert ("--volume", "/etc/netns/sb-shop-web/resolv.conf:/etc/resolv.conf:ro") in pairs
    assert ("--volume", "/srv/data:/data:ro") in pairs
    assert ("--env", "A=b c") in pairs
    assert ("--workdir", "/data") in pairs and ("--user", "1000") in pairs
    labels = {b for a, b in pairs if a == "--label"}
    assert labels == {"switchboard.topology=shop", "switchboard.container=web",
                      "switchboard.prefix=sb-", f"switchboard.spec={SPEC.digest()}"}
    assert argv[-6:] == ["--", "localhost/demo:1", "httpd", "-f", "-p", "80"]


def test_the_runtime_writes_its_container_id_to_a_cidfile(tmp_path: Path) -> None:
    cid = tmp_path / "web.cid"
    for runtime in ("podman", "docker"):
        command = run_command(runtime, _container(SPEC), "sb-", cid)
        argv = shlex.split(command.rsplit("exec ", 1)[1])
        assert ("--cidfile", str(cid)) in set(zip(argv, argv[1:], strict=False))
    topo = TopologyPlan(name="shop", networks=(), containers=(_container(SPEC),),
                        allocation={})
    [out] = with_run_commands([topo], "podman", "sb-", lambda t, c: tmp_path / f"{t}-{c}")
    assert f"--cidfile {tmp_path / 'shop-web'}" in out.containers[0].command
    assert read_cid(cid) is None
    cid.write_text("0123456789abcdef0123\n")
    assert read_cid(cid) == "0123456789ab"


def test_an_image_without_arguments_runs_its_own_command() -> None:
    argv = shlex.split(run_command("podman", _container(ImageRun("demo")), "sb-"))
    assert argv[-2:] == ["--", "demo"]


def test_a_changed_spec_changes_the_command_and_the_digest() -> None:
    other = ImageRun("localhost/demo:2", SPEC.args, SPEC.env, SPEC.volumes, SPEC.workdir,
                     SPEC.user)
    assert other.digest() != SPEC.digest()
    assert run_command("podman", _container(other), "sb-") != run_command(
        "podman", _container(SPEC), "sb-")


def test_only_image_containers_get_a_runtime_command() -> None:
    plain = ContainerPlan(topology="shop", name="api", netns="sb-shop-api",
                          command="sleep 1", attach_pid=None, endpoints=())
    topo = TopologyPlan(name="shop", networks=(), containers=(plain, _container(SPEC)),
                        allocation={})
    [out] = with_run_commands([topo], "podman", "sb-")
    assert out.containers[0].command == "sleep 1"
    assert out.containers[1].command.startswith("exec podman run ")


def test_ps_json_by_name() -> None:
    text = ('[{"Id": "0123456789abcdef", "Names": ["sb-shop-web"], "Image": "demo", '
            '"State": "running", "Labels": {"switchboard.topology": "shop"}}]')
    assert by_name(parse_ps(text)) == {
        "sb-shop-web": {"id": "0123456789ab", "image": "demo", "state": "running"}}
    assert parse_ps("") == [] and parse_ps("null") == []


def test_running_pids_from_podman_ps_and_docker_inspect() -> None:
    from plumbing.images import parse_docker_inspect, parse_podman_pids

    ps = ('[{"Names": ["web"], "Pid": 42, "State": "running"},'
          ' {"Names": ["old"], "Pid": 0, "State": "exited"}]')
    assert parse_podman_pids(ps) == {"web": 42}
    inspect = ('[{"Name": "/web", "State": {"Running": true, "Pid": 7}},'
               ' {"Name": "/gone", "State": {"Running": false, "Pid": 0}}]')
    assert parse_docker_inspect(inspect) == {"web": 7}


def test_event_lines_name_their_container() -> None:
    from plumbing.images import event_name

    podman_line = ('{"ID": "2fc1", "Name": "web", "Status": "start", "Type": "container",'
                   ' "Attributes": {}}')
    docker_line = ('{"status": "start", "id": "2fc1", "Type": "container", "Action": "start",'
                   ' "Actor": {"ID": "2fc1", "Attributes": {"name": "web"}}}')
    assert event_name(podman_line) == event_name(docker_line) == "web"
    assert event_name('{"Type": "image", "Name": "x"}') is None
    assert event_name("not json") is None


def test_a_missing_runtime_is_named_for_each_image() -> None:
    from plumbing.images import missing_images, remove

    found = missing_images("sbt-img-no-such-runtime", ["localhost/a", "localhost/b"])
    assert found == {image: "sbt-img-no-such-runtime is not installed on this host "
                            "(scripts/install-deps.sh installs it)"
                     for image in ("localhost/a", "localhost/b")}
    remove("sbt-img-no-such-runtime", ["x"])  # nothing to remove: no error


def test_under_docker_the_container_starts_without_network_and_is_attached_by_name() -> None:
    command = run_command("docker", _container(SPEC), "sb-")
    first, rest = command.split("; exec ", 1)
    assert first == "docker rm -f sb-shop-web >/dev/null 2>&1"
    argv = shlex.split(rest)
    pairs = {(a, b) for a, b in zip(argv, argv[1:], strict=False)}
    assert ("--network", "none") in pairs and "--replace" not in argv
    assert ("--volume", "/etc/netns/sb-shop-web/resolv.conf:/etc/resolv.conf:ro") in pairs
    topo = TopologyPlan(name="shop", networks=(), containers=(_container(SPEC),),
                        allocation={})
    [out] = with_run_commands([topo], "docker", "sb-")
    assert out.containers[0].attach_name == ("docker", "sb-shop-web")
    assert out.containers[0].runtime == "docker"
    [podman] = with_run_commands([topo], "podman", "sb-")
    assert podman.containers[0].attach_name is None


def test_docker_ps_json_lines_by_name() -> None:
    text = ('{"ID": "0123456789abcdef", "Names": "sb-shop-web", "Image": "demo", '
            '"State": "running"}\n{"ID": "fedcba", "Names": "other", "Image": "x"}\n')
    assert by_name(parse_ps(text))["sb-shop-web"] == {
        "id": "0123456789ab", "image": "demo", "state": "running"}
