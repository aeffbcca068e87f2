"""The README's examples, run as written: `make run` itself (in a var/ of its own, on free ports,
set through the README's own ``CC_<SECTION>__<KEY>`` overrides), its curl, SIPp and softphone
examples against that platform, every command of its command-line block, its configuration error,
its HTTP routes, `make lint` and `make bench`. `make test` is what runs this file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.redis import connect
from callcenter import api
from tests.conftest import ROOT, Platform, free_port, require, wait_healthy, worker_ports
from tests.sip.phones import phone, result

README = (ROOT / "README.md").read_text()
CALLCENTER = str(Path(sys.executable).parent / "callcenter")  # the venv's entry point, as `make` installs it


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"the README has no section {title!r}"
    return match.group(1)


def code_block(text: str) -> str:
    match = re.search(r"```\w*\n(.*?)```", text, re.S)
    assert match, "no code block"
    return match.group(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, dict[str, str]]]:
    """`make run`, and the environment a second terminal would need to reach it (its var/)."""
    require("kamailio")
    tmp = tmp_path_factory.mktemp("make-run")
    var = tmp / "var"
    if (ROOT / "var" / "prompts").exists():  # built once by `make test`: `make run` finds them up to date
        shutil.copytree(ROOT / "var" / "prompts", var / "prompts")
    http_port, sip_port = free_port(), free_port()
    worker_port, rtp_port = worker_ports()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("CC_")}  # embedded stores, as documented
    env |= {"CC_PATHS__VAR_DIR": str(var), "CC_HTTP__PORT": str(http_port), "CC_SIP__PORT": str(sip_port),
            "CC_MEDIA__WORKERS": "2", "CC_MEDIA__WORKER_SIP_PORT": str(worker_port),
            "CC_MEDIA__RTP_PORT": str(rtp_port)}
    log = tmp / "make-run.log"
    proc = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    p = Platform(proc, f"http://127.0.0.1:{http_port}", sip_port, worker_port, var, ROOT / "sip_config" /  # type: ignore[arg-type]
                 "callcenter.toml", log, "", "", "", 200)
    wait_healthy(p, 180)  # `make` may have to bring .venv up to date first
    p.api_key = (var / "dev-api-key").read_text().strip()
    yield p, env
    p.stop()  # Ctrl-C: SIGINT to the whole process group; make reports the interrupt
    assert "callcenter INFO stopped;" in log.read_text(), log.read_text()[-3000:]
    left = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(var) not in left, "processes of the platform are left running"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CALLCENTER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_make_run_serves_the_demo_and_prints_a_development_key(demo: tuple[Platform, dict[str, str]]) -> None:
    p, _ = demo
    printed = re.search(r"development API key \(all scopes, also in \S+\): (\S+)", p.log.read_text())
    assert printed and printed.group(1) == p.api_key
    assert {q["name"] for q in p.get("/api/queues")[1]} >= {"support", "billing"}  # type: ignore[index]
    phones = [ln.split() for ln in (p.var_dir / "demo-phones.txt").read_text().splitlines()]
    assert [ext for ext, _, _ in phones] == ["201", "202", "203", "204"]
    for ext, login, _ in phones:
        assert p.get(f"/api/agents/{login}")[1]["extension"] == ext  # type: ignore[index]


def test_the_curl_example_logs_alice_in_and_her_softphone_takes_a_call_to_500(
        demo: tuple[Platform, dict[str, str]], tmp_path: Path) -> None:
    """The README's walk-through: a softphone registers as 201 with the listed password, the curl
    example makes alice available, a call to 500 rings that phone."""
    p, _ = demo
    password = next(pw for ext, _, pw in (ln.split() for ln in (p.var_dir / "demo-phones.txt").read_text().splitlines())
                    if ext == "201")
    alice = phone("--port", str(free_port()), "--agent", "--register", f"sip:201@127.0.0.1:{p.sip_port}",
                  f"--password={password}", "--tone", "1000", "--talk", "3", "--seconds", "15")
    block = re.search(r"```sh\n(curl [^`]+?)```", README)
    assert block, "the README's curl example is gone"
    command = block.group(1).replace("localhost:8080", p.http.removeprefix("http://").replace("127.0.0.1", "localhost"))
    res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30,
                         cwd=p.var_dir.parent)  # var/dev-api-key, as from the checkout after `make run`
    assert res.returncode == 0 and '"error"' not in res.stdout, (res.stdout, res.stderr)
    assert p.get("/api/agents/alice")[1]["state"]["status"] == "available"  # type: ignore[index]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    caller = phone("--port", str(free_port()), "--call", f"sip:500@127.0.0.1:{p.sip_port}", "--seconds", "10")
    c, a = result(caller), result(alice)
    assert c["answered"] and [x["answered"] for x in a["calls"]] == [True], (c, a)
    p.wait(lambda: (p.get(f"/api/interactions?since={since}")[1]["items"] or [{}])[-1].get("ended_at"),  # type: ignore[index]
           what="the call's record closed")
    record = p.get(f"/api/interactions/{p.get(f'/api/interactions?since={since}')[1]['items'][-1]['id']}")[1]  # type: ignore[index]
    names = [e["event"] for e in record["events"]]  # type: ignore[index]
    assert record["route"] == "support" and "CONNECT" in names and "COMPLETEAGENT" in names, record  # type: ignore[index]
    dial = next(e for e in record["events"] if e["event"] == "DIAL")  # type: ignore[index]
    assert dial["data"]["uri"].startswith("sip:201@"), dial  # alice's registered softphone


def test_the_sipp_example_completes_through_the_front_door(demo: tuple[Platform, dict[str, str]],
                                                         tmp_path: Path) -> None:
    """SIPp's built-in uac scenario ignores Record-Route and sends its BYE to the front door with no
    route: the front door finds the worker from the dialog and the call ends cleanly."""
    require("sipp")
    p, _ = demo
    example = re.search(r"`(sipp -sn uac [^`]+)`", README)
    assert example, "the README's SIPp example is gone"
    args = example.group(1).replace("127.0.0.1:5060", f"127.0.0.1:{p.sip_port}").split()
    res = subprocess.run([*args, "-nostdin", "-timeout", "30s", "-timeout_error"], capture_output=True, text=True,
                         errors="replace", timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:]
    log = (p.var_dir / "kamailio" / "kamailio.log").read_text()
    assert "404" not in "".join(ln for ln in log.splitlines() if "BYE" in ln)


def test_the_access_control_example_key_has_exactly_its_scopes(demo: tuple[Platform, dict[str, str]]) -> None:
    """`callcenter api-key create --name crm --scope read,control` from a second terminal, while
    the platform runs (it reaches the same embedded database through var/)."""
    p, env = demo
    example = re.search(r"`callcenter (api-key create [^`]+)`", section("Access control"))
    assert example, "the README's api-key example is gone"
    created = cli(env, *example.group(1).split())
    assert created.returncode == 0, created.stderr
    key = re.search(r"cc_\S+", created.stdout)
    assert key, created.stdout
    crm = Platform(p.proc, p.http, p.sip_port, p.worker_sip_port, p.var_dir, p.config, p.log, key.group(0), "", "")
    assert crm.get("/api/queues")[0] == 200
    assert crm.send("POST", "/api/agents/bruno/status", {"status": "not_ready", "reason": "break"})[0] == 200
    assert crm.send("POST", "/api/skills", {"name": "french"})[0] == 403  # configure: not given
    listed = cli(env, "api-key", "list")
    line = next(ln for ln in listed.stdout.splitlines() if " crm " in f" {ln} ")
    key_id = line.split()[0]
    assert cli(env, "api-key", "revoke", key_id).returncode == 0
    assert crm.get("/api/queues")[0] == 401


def test_the_command_line_block_is_what_the_cli_accepts() -> None:
    """Every command and option the README's block shows exists (read from each one's --help)."""
    block = code_block(section("Command line"))
    for line in block.strip().splitlines():
        spec = line.split("#")[0].strip()
        assert spec.startswith("callcenter "), line
        first, *alternatives = (part.strip() for part in spec.removeprefix("callcenter ").split("|"))
        words = first.split()
        command = [w for w in words if re.fullmatch(r"[a-z][a-z-]*", w)][:1]
        variants = [first] + [f"{command[0]} {alt}" for alt in alternatives]
        for variant in variants:
            names = [w for w in variant.split() if re.fullmatch(r"[a-z][a-z-]*", w)]
            path = names[:2] if names[0] in ("api-key", "db", "spool", "records") else names[:1]
            helped = subprocess.run([CALLCENTER, *path, "--help"], capture_output=True, text=True, timeout=30)
            assert helped.returncode == 0, (variant, helped.stderr)
            for option in re.findall(r"--[a-z][a-z-]*", variant):
                assert option in helped.stdout, f"{variant}: `callcenter {' '.join(path)}` has no {option}"


def test_the_documented_commands_run_against_the_demo(demo: tuple[Platform, dict[str, str]]) -> None:
    p, env = demo
    assert "schema is up to date" in cli(env, "db", "migrate").stdout
    assert cli(env, "spool", "list").returncode == 0
    assert cli(env, "spool", "replay").returncode == 0
    rebuilt = cli(env, "records", "rebuild")
    assert rebuilt.returncode == 0 and "events read from the stream" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
    assert cli(env, "check-config").returncode == 0
    assert cli(env, "prompts").returncode == 0
    demo_data = re.search(r"callcenter (demo-data --customers \d+)", section("Command line"))
    assert demo_data
    made = cli(env, *demo_data.group(1).split())
    assert made.returncode == 0, made.stderr
    # A new phone password from the command line reaches the running front door at once (NOTIFY).
    made = cli(env, "sip-password", "chen")
    assert made.returncode == 0 and "shown once" in made.stdout, made.stdout
    password = made.stdout.strip().splitlines()[-1]
    chen = phone("--port", str(free_port()), "--register", f"sip:203@127.0.0.1:{p.sip_port}",
                 f"--password={password}", "--seconds", "1")
    assert result(chen)["calls"] == []


def test_a_bad_configuration_is_refused_as_shown(tmp_path: Path) -> None:
    shown = code_block(section("Command line").split("A bad file is refused", 1)[1])
    bad = tmp_path / "callcenter.toml"
    bad.write_text('[http]\nport = "8080"\n')
    res = subprocess.run([CALLCENTER, "--config", str(bad), "run"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert res.stderr.strip() == shown.strip().replace("sip_config/callcenter.toml", str(bad))


def test_every_http_route_is_documented_and_answers(demo: tuple[Platform, dict[str, str]]) -> None:
    """The routes the README lists are the app's routes, and each one answers (without a key: 401,
    or 200 for /healthz and the OpenAPI document; never the router's 404/405)."""
    documented = set()
    for methods, path in re.findall(r"`((?:GET|POST|PUT|DELETE)(?:\|(?:GET|POST|PUT|DELETE))*)\s+(/[^`?\s]*)",
                                    section("HTTP API")):
        documented |= {(m, re.sub(r"<(\w+)>", r"{\1}", path)) for m in methods.split("|")}
    app = api.make_app(api.Services(None, connect("redis://127.0.0.1:1"), None, None,  # type: ignore[arg-type]
                                    prompts=ROOT / "var" / "prompts"), [])
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}  # type: ignore[union-attr]
    assert documented == served
    p, _ = demo
    for method, path in sorted(documented):
        req = urllib.request.Request(p.http + re.sub(r"\{\w+\}", "alice", path), method=method,
                                     data=b"{}" if method in ("POST", "PUT") else None,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == (200 if path in ("/healthz", "/api/openapi.json") else 401), (method, path, status)


def test_make_lint_passes() -> None:
    res = subprocess.run(["make", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]


def test_make_bench_runs(tmp_path: Path) -> None:
    """Each benchmark `make bench` runs, in its smoke mode (the figures are BENCHMARKS.md's job)."""
    planned = subprocess.run(["make", "-n", "bench"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    benches = re.findall(r"-m (bench\.\w+)", planned)
    assert benches == ["bench.sip_capacity", "bench.acd_routing"], planned
    small = {"bench.sip_capacity": ["--processes", "2"], "bench.acd_routing": ["--sizes", "100"]}
    for bench in benches:
        res = subprocess.run([sys.executable, "-m", bench, "--quick", *small.get(bench, [])], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        compared = re.search(r"\bratio\b|^baseline:", res.stdout, re.M)  # against the baseline of the same run
        assert res.returncode == 0 and "machine:" in res.stdout and compared, (bench, res.stdout[-2000:],
                                                                               res.stderr[-2000:])
