"""The JavaScript SDK (sdk/js, `@enabledrm/sdk`): runs its `node --test` suite (sdk/js/test/*.test.mjs)
against the live servers started here, so `make test` (and CI) runs it; and installs the package the way
a user would (`npm pack` + `npm install` of the tarball, offline) to run the reference's snippet from a
separate project."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

from tests.sdk.conftest import SDK_JS, LiveServer

JS_TESTS = SDK_JS / "test"
NODE = shutil.which("node")
NPM = shutil.which("npm")

assert NODE is not None, "node (20+) is needed for the JavaScript SDK tests; .ci/run installs it"


@functools.lru_cache(maxsize=1)
def node_flags() -> tuple[str, ...]:
    """`--experimental-websocket` where it gives a global WebSocket (Node 20.10+; a no-op later), else none
    (then the suite checks the clear error and uses the WebSocket implementation it passes in)."""
    probe = "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
    for flags in (("--experimental-websocket",), ()):
        result = subprocess.run([NODE, *flags, "-e", probe], capture_output=True, timeout=30)
        if result.returncode == 0:
            return flags
    return ()


def has_global_websocket() -> bool:
    probe = "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
    return subprocess.run([NODE, *node_flags(), "-e", probe], capture_output=True, timeout=30).returncode == 0


def tap_summary(output: str) -> dict[str, int]:
    return {key: int(value) for key, value in re.findall(r"^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$",
                                                         output, re.MULTILINE)}


def test_node_test_suite(sdk_server: LiveServer, limited_server: LiveServer, limited_tokens):
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, "no sdk/js/test/*.test.mjs"
    env = dict(os.environ, BASE_URL=sdk_server.base_url, ADMIN_USERNAME=sdk_server.admin_username,
               ADMIN_PASSWORD=sdk_server.admin_password, LIMITED_BASE_URL=limited_server.base_url,
               LIMITED_TOKEN=limited_tokens["js"], NODE_NO_WARNINGS="1")
    assert has_global_websocket(), "node should offer a global WebSocket (Node 20 with --experimental-websocket)"
    env["EXPECT_GLOBAL_WEBSOCKET"] = "1"
    command = [NODE, *node_flags(), "--test", "--test-reporter=tap", *files]
    result = subprocess.run(command, cwd=SDK_JS, env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    summary = tap_summary(result.stdout)
    assert result.returncode == 0, f"node --test failed ({summary})\n{output[-8000:]}"
    assert summary.get("pass", 0) > 0 and summary.get("fail", -1) == 0, output[-4000:]
    assert summary.get("cancelled", 0) == 0 and summary.get("todo", 0) == 0, output[-4000:]
    skipped = [line for line in result.stdout.splitlines() if "# SKIP" in line]
    assert summary.get("skipped", 0) == 0 and not skipped, f"skipped: {skipped}"
    assert summary["pass"] == summary["tests"], summary


def test_packed_package_runs_the_reference_snippet(sdk_server: LiveServer, tmp_path):
    """What a new user does: install the SDK from its folder into a project and run the reference's snippet."""
    assert NPM is not None, "npm is needed to pack the JavaScript SDK; .ci/run installs it"
    from enabledrm_sdk import EnableDRMClient

    admin = EnableDRMClient(sdk_server.base_url)
    admin.auth.login(sdk_server.admin_username, sdk_server.admin_password)
    target = admin.targets.create(f"js-pack-{os.getpid()}", connection="local")
    job = admin.jobs.create(f"js-pack-{os.getpid()}", [{"action_type": "command", "action_name": "e",
                                                      "action_parameters": {"command": "echo packed"}}],
                            target_ids=[target.id])
    execution = admin.executions.wait(admin.jobs.execute(job.id).execution_serial, timeout=30)
    assert execution.status == "completed"

    npm_env = dict(os.environ, npm_config_cache=str(tmp_path / "npm-cache"), npm_config_update_notifier="false",
                   npm_config_fund="false", npm_config_audit="false")
    packed = subprocess.run([NPM, "pack", "--silent", "--pack-destination", str(tmp_path)], cwd=SDK_JS, env=npm_env,
                            capture_output=True, text=True, timeout=120)
    assert packed.returncode == 0, packed.stderr
    tarball = tmp_path / packed.stdout.strip().splitlines()[-1]
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text('{"name": "sdk-user", "private": true, "type": "module"}\n')
    installed = subprocess.run([NPM, "install", "--offline", "--no-audit", "--no-fund", str(tarball)], cwd=project,
                               env=npm_env, capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    package_dir = project / "node_modules" / "@enabledrm" / "sdk"
    shipped = sorted(str(p.relative_to(package_dir)) for p in package_dir.rglob("*") if p.is_file())
    assert "index.d.ts" in shipped and "src/index.js" in shipped and not any(s.startswith("test/") for s in shipped)
    # zero runtime dependencies: nothing but the SDK itself was installed
    assert sorted(p.name for p in (project / "node_modules").iterdir() if not p.name.startswith(".")) == ["@enabledrm"]

    from tests.sdk.test_python_sdk import REFERENCE  # the snippet text lives in the node test; read it from there
    snippet_source = (JS_TESTS / "reference-snippet.test.mjs").read_text()
    snippet = snippet_source.split("export const JS_SNIPPET = `", 1)[1].split("`;\n", 1)[0]
    snippet = snippet.replace("\\`", "`").replace("\\$", "$")
    assert snippet in REFERENCE.read_text()
    code = (snippet.replace("'J20250001.0001'", f"'{execution.execution_serial}'")
            .replace("'T20250001'", f"'{target.target_serial}'")
            .replace("'http://localhost:8000'", f"'{sdk_server.base_url}'")
            .replace("'your_jwt_token'", f"'{admin.token}'"))
    (project / "example.mjs").write_text(code)
    ran = subprocess.run([NODE, "example.mjs"], cwd=project, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["Status: completed", "Success rate: 100%"]
