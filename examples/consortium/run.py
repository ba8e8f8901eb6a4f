"""The consortium story end to end: three organisations, one anvil node, only the CLI.

Three clinics (A, B, C), each a separate workspace with its own keys and passphrase, each
command a separate ``ailedger`` process, share one development node (anvil) and one set of
contracts. The steps (README.md beside this file explains each one and its expected output):

 1. start anvil on a free loopback port
 2. clinic A: ``init --rpc`` (refused: no ether), ``chain fund``, ``init`` again (deploys)
 3. clinic A: ``consortium create``; B and C: ``init --join``, ``chain fund``, ``add-member``
 4. clinic A: ``provenance register`` the digits data set
 5. clinic A: ``share grant`` B, ``share seal``; B: ``share open`` (same bytes)
 6. clinic A: ``share revoke`` B, seals a new version; B's ``share open`` is refused
 7. A, B, C: ``train create`` / ``train join`` (C sends poisoned updates and is excluded)
 8. clinic A: ``provenance register`` the model with the data set as its parent; ``lineage``
 9. clinic A: audited predictions with the verified model (``orgtools.py predict``:
    ``load_verified`` and ``audited()``)
10. clinic A: ``log anchor``, ``log export`` (its log key is in the consortium file)
11. an outsider, in a folder with no workspace: ``verify EXPORT --key K --rpc URL`` and
    ``provenance verify MODEL --trust A.pub --rpc URL``

Each step prints what happened. On a failure the script names the step, prints the failing
command's last error line, and exits 1 (2 for bad arguments; 130 when interrupted, after
stopping anvil and the parties). ``--summary FILE`` writes the outcomes as JSON (also on
failure, with ``failed_step``).

Usage::

    python examples/consortium/run.py [--dir DIR] [--anvil PATH] [--summary FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_ANVIL = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ORGS = ("clinic-a", "clinic-b", "clinic-c")
MALICIOUS = "clinic-c"
ROUNDS = 3
PREDICTIONS = 20


class StepFailed(Exception):
    """A step did not give the outcome it promises."""


class Story:
    """Runs the steps, prints each one, and keeps the outcomes for the summary."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.summary: dict[str, Any] = {"ok": False, "failed_step": None, "steps": []}
        self.step_no = 0
        self.started = time.monotonic()
        self.rpc = ""
        self.orgs: dict[str, dict[str, Any]] = {}

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        """Print ``title`` as the next step; a failure inside names it and stops the story."""
        self.step_no += 1
        number = self.step_no
        print(f"\n[{number}] {title}", flush=True)
        began = time.monotonic()
        try:
            yield
        except StepFailed as exc:
            self.summary["failed_step"] = {"number": number, "title": title, "error": str(exc)}
            raise
        except subprocess.TimeoutExpired as exc:
            command = " ".join(str(part) for part in exc.cmd[1:])[:160]
            error = f"`{command}` did not finish within {exc.timeout} s"
            self.summary["failed_step"] = {"number": number, "title": title, "error": error}
            raise StepFailed(error) from exc
        except Exception as exc:  # anything unexpected still names the step
            error = f"{type(exc).__name__}: {exc}"
            self.summary["failed_step"] = {"number": number, "title": title, "error": error}
            raise StepFailed(error) from exc
        seconds = round(time.monotonic() - began, 2)
        self.summary["steps"].append({"number": number, "title": title, "seconds": seconds})
        print(f"    ok ({seconds:.1f} s)", flush=True)

    def say(self, line: str) -> None:
        print(f"    {line}", flush=True)

    # ---------------------------------------------------------------------- running the CLI

    def env(self, org: str | None) -> dict[str, str]:
        """The environment of ``org``'s processes: its passphrase, no workspace from outside."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}
        if org is not None:
            env["AILEDGER_PASSPHRASE"] = self.orgs[org]["passphrase"]
        return env

    def ailedger(
        self,
        org: str | None,
        *args: str,
        code: int = 0,
        cwd: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ailedger ARGS`` as ``org`` (its workspace with ``-w``); expect exit ``code``."""
        command = [sys.executable, "-m", "ailedger", *args]
        if org is not None:
            command += ["-w", str(self.orgs[org]["workspace"])]
        shown = " ".join(["ailedger", *args]).replace(str(self.root) + "/", "")
        self.say(f"{org or 'outsider'}$ {shown}")
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=self.env(org),
            cwd=cwd or self.root,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if done.returncode != code:
            raise StepFailed(
                f"`{shown}` exited {done.returncode}, expected {code}: {last_line(done.stderr)}"
            )
        return done

    def json_of(self, org: str | None, *args: str, cwd: Path | None = None) -> Any:
        """``ailedger ARGS --json`` as ``org``, parsed."""
        done = self.ailedger(org, *args, "--json", cwd=cwd)
        try:
            return json.loads(done.stdout)
        except ValueError as exc:
            printed = done.stdout[:200]
            raise StepFailed(f"`ailedger {args[0]}` printed no JSON: {printed!r}") from exc

    def summary_file(self, path: Path | None) -> None:
        self.summary["seconds"] = round(time.monotonic() - self.started, 1)
        if path is not None:
            path.write_text(json.dumps(self.summary, indent=2) + "\n")


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(nothing on stderr)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_anvil(binary: Path, port: int) -> subprocess.Popen[bytes]:
    """Start anvil on 127.0.0.1:``port`` and wait until it answers (at most 20 s)."""
    process = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port), "--hardfork", "prague",
         "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).encode()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StepFailed(f"anvil exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{port}",
                    data=request,
                    headers={"Content-Type": "application/json"},
                ),
                timeout=2,
            ):
                return process
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    stop(process)
    raise StepFailed("anvil did not answer within 20 s")


def stop(process: subprocess.Popen[Any]) -> None:
    """End a process this script started: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -------------------------------------------------------------------------------- the story


def create_organisations(story: Story) -> None:
    for org in ORGS:
        story.orgs[org] = {
            "workspace": story.root / org / ".ailedger",
            # each organisation's own secret; a real one types it or keeps it in a vault
            "passphrase": secrets.token_urlsafe(18),
        }
        (story.root / org).mkdir(parents=True, exist_ok=True)


def found_consortium(story: Story) -> None:
    with story.step("clinic A: a workspace on the node, funded and deployed"):
        done = story.ailedger("clinic-a", "init", "--rpc", story.rpc, code=1)
        hint = re.search(r"ailedger chain fund (0x[0-9a-fA-F]{40})", done.stderr)
        if hint is None:
            raise StepFailed(f"`init` did not say how to fund: {last_line(done.stderr)}")
        story.say(f"refused as expected: {last_line(done.stderr)}")
        story.ailedger("clinic-a", "chain", "fund", hint.group(1), "--ether", "10")
        made = story.json_of("clinic-a", "init")
        story.orgs["clinic-a"]["account"] = made["account"]
        story.say(f"account {made['account']}, contracts {', '.join(made['contracts'])}")

    with story.step("the consortium: A creates it, B and C join with the file"):
        file = story.root / "clinic-a" / "consortium.toml"
        story.ailedger("clinic-a", "consortium", "create", "--out", str(file), "--name", "clinics",
                       "--member-name", "clinic-a")  # fmt: skip
        shown: dict[str, Any] = {}
        for org in ("clinic-b", "clinic-c"):
            # the file travels to the other organisation (mail, a shared drive...)
            theirs = story.root / org / "consortium.toml"
            shutil.copyfile(file, theirs)
            joined = story.json_of(org, "init", "--join", str(theirs))
            account = joined["account"]
            story.orgs[org]["account"] = account
            story.ailedger(org, "chain", "fund", account, "--ether", "10")
            shown = story.json_of(
                org, "consortium", "add-member", str(theirs), "--member-name", org
            )
            shutil.copyfile(theirs, file)  # ... and comes back with the new member in it
        members = {m["account"].lower(): m for m in shown["members"]}
        expected = [story.orgs[o]["account"].lower() for o in ORGS]
        if list(members) != expected:
            raise StepFailed(f"members {list(members)}, expected {expected}")
        for org in ORGS:
            member = members[story.orgs[org]["account"].lower()]
            if not member.get("sharing_key") or not member.get("log_key"):
                raise StepFailed(f"{org}'s entry lacks its sharing key or log key: {member}")
            story.orgs[org]["sharing_key"] = member["sharing_key"]
            story.orgs[org]["log_key"] = member["log_key"]
        story.say(
            f"consortium {shown['name']} on chain {shown['chain_id']}: 3 members, each with "
            "its account, log key and sharing key"
        )
        story.summary["organisations"] = {o: story.orgs[o]["account"] for o in ORGS}
        story.summary["consortium"] = {"chain_id": shown["chain_id"], "members": len(members)}


def share_data(story: Story) -> str:
    a, b = story.root / "clinic-a", story.root / "clinic-b"
    data = a / "digits.csv"
    with story.step("clinic A registers a data set"):
        tool(story, "dataset", str(data))
        registered = story.json_of(
            "clinic-a", "provenance", "register", str(data), "--kind", "dataset"
        )
        dataset = str(registered["digest"])
        story.say(f"digits.csv registered as {dataset} (bundle digits.csv.ailedger.json beside)")
        story.summary["dataset"] = dataset

    b_key = story.orgs["clinic-b"]["sharing_key"]
    owner = story.orgs["clinic-a"]["account"]
    share: dict[str, Any] = {}
    story.summary["share"] = share
    with story.step("clinic A grants clinic B and seals; B opens it"):
        story.ailedger("clinic-a", "share", "grant", dataset, b_key)
        sealed = b / "digits.sealed"  # A sends the sealed file to B
        story.ailedger("clinic-a", "share", "seal", str(data), "-r", dataset, "-o", str(sealed))
        opened = b / "digits.csv"
        story.ailedger(
            "clinic-b", "share", "open", str(sealed), "-r", dataset, "--owner", owner,
            "-o", str(opened),
        )  # fmt: skip
        share["opened_before_revoke"] = opened.read_bytes() == data.read_bytes()
        if not share["opened_before_revoke"]:
            raise StepFailed("B opened other bytes than A sealed")
        story.say(f"B opened {opened.stat().st_size} bytes, identical to A's file")

    with story.step("clinic A revokes B; B cannot open the next version"):
        story.ailedger("clinic-a", "share", "revoke", dataset, b_key)
        sealed = b / "digits-v2.sealed"
        story.ailedger("clinic-a", "share", "seal", str(data), "-r", dataset, "-o", str(sealed))
        refused = story.ailedger(
            "clinic-b", "share", "open", str(sealed), "-r", dataset, "--owner", owner,
            "-o", str(b / "digits-v2.csv"), code=1,
        )  # fmt: skip
        share["open_after_revoke_refused"] = not (b / "digits-v2.csv").exists()
        share["refusal"] = last_line(refused.stderr)
        if not share["open_after_revoke_refused"]:
            raise StepFailed("B's refused open left a file behind")
        story.say(f"refused as expected: {share['refusal']}")
    return dataset


def train(story: Story) -> Path:
    accounts = [story.orgs[o]["account"] for o in ORGS]
    task = story.root / "clinic-a" / "task.json"
    model = story.root / "clinic-a" / "model.npz"
    training: dict[str, Any] = {"malicious": story.orgs[MALICIOUS]["account"]}
    story.summary["training"] = training
    with story.step(f"A, B and C train together ({MALICIOUS} sends poisoned updates)"):
        created = story.json_of(
            "clinic-a", "train", "create", "--participants", ",".join(accounts),
            "--rounds", str(ROUNDS), "--phase-blocks", "30", "--data", "digits",
            "--out", str(task),
        )  # fmt: skip
        story.say(f"task {created['task']} on {created['contract']}: {ROUNDS} rounds")
        parties = {}
        for org in ORGS:
            copy = story.root / org / "task.json"
            if copy != task:
                shutil.copyfile(task, copy)
            args = [
                "train", "join", str(copy), "--json", "--timeout", "240",
                "--mine-idle-after", "0.5", "--poll-interval", "0.05",
            ]  # fmt: skip
            if org == MALICIOUS:
                args += ["--attack", "scaling"]  # labels flipped, update scaled up
            if org == "clinic-a":
                args += ["--model-out", str(model)]
            story.say(f"{org}$ ailedger {' '.join(args)}".replace(str(story.root) + "/", ""))
            parties[org] = subprocess.Popen(
                [sys.executable, "-m", "ailedger", *args, "-w", str(story.orgs[org]["workspace"])],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=story.env(org),
                cwd=story.root / org,
            )
        results: dict[str, Any] = {}
        try:
            for org, process in parties.items():
                out, err = process.communicate(timeout=300)
                if process.returncode != 0:
                    sys.stderr.write(err[-3000:])  # its last progress lines, for the record
                    raise StepFailed(
                        f"{org}'s `train join` exited {process.returncode}: {last_line(err)}"
                    )
                results[org] = json.loads(out)
        finally:
            for process in parties.values():
                stop(process)
        honest = [results[o] for o in ORGS if o != MALICIOUS]
        bad = story.orgs[MALICIOUS]["account"].lower()
        last = honest[0]["rounds"][-1]
        training["excluded"] = [a.lower() for a in last["excluded"]]
        training["malicious_excluded"] = bool(results[MALICIOUS]["excluded"]) and (
            bad in training["excluded"]
        )
        training["honest_agree"] = len({r["model_digest"] for r in honest}) == 1
        training["accuracy"] = honest[0]["test_accuracy"]
        training["rounds"] = [
            {"round": r["round"], "status": r["status"], "flagged": r["flagged"],
             "excluded": r["excluded"]}
            for r in honest[0]["rounds"]
        ]  # fmt: skip
        for r in honest[0]["rounds"]:
            story.say(
                f"round {r['round']}: {r['status']}, flagged {len(r['flagged'])}, "
                f"excluded {len(r['excluded'])}"
            )
        if not training["malicious_excluded"]:
            raise StepFailed(f"{MALICIOUS} was not excluded: {training['excluded']}")
        if not training["honest_agree"]:
            raise StepFailed("the honest parties ended with different models")
        story.say(
            f"{MALICIOUS} excluded by the others; A and B agree on the model, "
            f"test accuracy {training['accuracy']:.3f}"
        )
    return model


def register_model(story: Story, model: Path, dataset: str) -> str:
    with story.step("clinic A registers the model with its lineage"):
        registered = story.json_of(
            "clinic-a", "provenance", "register", str(model), "--kind", "model",
            "--parent", dataset,
        )  # fmt: skip
        digest = str(registered["digest"])
        lineage = story.json_of("clinic-a", "provenance", "lineage", digest)
        edges = {(e["parent"], e["child"]) for e in lineage.get("edges", [])}
        linked = (dataset, digest) in edges
        story.summary["model"] = {"digest": digest, "lineage_has_dataset": linked}
        if not linked:
            raise StepFailed(f"the lineage of {digest} has no edge from the data set: {edges}")
        story.say(f"model.npz registered as {digest}, parent {dataset}")
    return digest


def serve(story: Story, model: Path) -> None:
    a = story.orgs["clinic-a"]
    pem = story.root / "clinic-a" / "clinic-a.pub"
    shutil.copyfile(a["workspace"] / "keys" / "ed25519.pub", pem)
    with story.step(f"clinic A serves {PREDICTIONS} audited predictions with the verified model"):
        story.say("clinic-a$ python orgtools.py predict (load_verified, then audited())")
        done = tool(
            story, "predict", "--workspace", str(a["workspace"]), "--model", str(model),
            "--trust", str(pem), "--rpc", story.rpc, "--count", str(PREDICTIONS),
            org="clinic-a",
        )  # fmt: skip
        served = json.loads(done.stdout)
        story.summary["predictions"] = served
        if served["count"] != PREDICTIONS or served["log_size"] < PREDICTIONS:
            raise StepFailed(f"expected {PREDICTIONS} logged decisions: {served}")
        story.say(
            f"{served['correct']}/{served['count']} correct; the log holds "
            f"{served['log_size']} entries (training rounds and registrations among them)"
        )


def publish_and_audit(story: Story, model: Path) -> None:
    a = story.root / "clinic-a"
    export = a / "export"
    with story.step("clinic A anchors its log on chain and exports it"):
        story.ailedger("clinic-a", "log", "anchor")
        story.ailedger("clinic-a", "log", "export", str(export))
        # the log's verifier key, as `ailedger log key` prints it, is in the consortium file
        key = story.orgs["clinic-a"]["log_key"]
        story.say(f"clinic A's log key (from the consortium file): {key}")

    outsider = story.root / "outsider"
    outsider.mkdir(exist_ok=True)
    checks: dict[str, Any] = {}
    story.summary["outsider"] = checks
    with story.step("an outsider verifies, with no workspace: only files, keys and the node"):
        # what clinic A publishes: the export, the model with its bundle, its public key
        shutil.copytree(export, outsider / "export")
        for name in (model.name, model.name + ".ailedger.json", "clinic-a.pub"):
            shutil.copyfile(a / name, outsider / name)
        verified = story.json_of(
            None, "verify", "export", "--key", key, "--rpc", story.rpc, cwd=outsider
        )
        checks["verify_passed"] = True
        checks["anchors"] = verified.get("anchors")
        checks["anchors_trust"] = verified.get("anchors_trust")
        if verified.get("anchors_trust") != "chain" or not verified.get("anchors"):
            raise StepFailed(f"the export's anchors were not checked on chain: {verified}")
        story.say(
            f"log verified: {verified.get('size', '?')} entries, {verified['anchors']} "
            "anchor(s) checked on chain"
        )
        checked = story.json_of(
            None, "provenance", "verify", model.name, "--trust", "clinic-a.pub",
            "--rpc", story.rpc, cwd=outsider,
        )  # fmt: skip
        checks["model_verified"] = True
        checks["model_owner"] = checked.get("owner")
        story.say(f"model.npz verified against its registration by {checked.get('owner')}")
        if list(outsider.glob("**/.ailedger")):
            raise StepFailed("a workspace appeared in the outsider's folder")


def tool(story: Story, *args: str, org: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``orgtools.py ARGS`` (an organisation's own code) as a process."""
    done = subprocess.run(
        [sys.executable, str(HERE / "orgtools.py"), *args],
        capture_output=True,
        text=True,
        env=story.env(org),
        cwd=story.root,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    if done.returncode != 0:
        why = last_line(done.stderr)
        raise StepFailed(f"orgtools.py {args[0]} exited {done.returncode}: {why}")
    return done


def run(story: Story, anvil: Path) -> None:
    """Tell the whole story in ``story.root``; raises :class:`StepFailed` naming a step."""
    create_organisations(story)
    node: subprocess.Popen[bytes] | None = None
    try:
        with story.step("start a development node (anvil) on loopback"):
            port = free_port()
            node = start_anvil(anvil, port)
            story.rpc = f"http://127.0.0.1:{port}"
            story.say(f"anvil at {story.rpc} (pid {node.pid})")
        found_consortium(story)
        dataset = share_data(story)
        model = train(story)
        register_model(story, model, dataset)
        serve(story, model)
        publish_and_audit(story, model)
        story.summary["ok"] = True
    finally:
        if node is not None:
            stop(node)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The consortium story on a local anvil node.")
    parser.add_argument(
        "--dir", type=Path, help="Keep every workspace and file here (default: a temporary one)."
    )
    parser.add_argument("--anvil", type=Path, default=DEFAULT_ANVIL, help="The anvil binary.")
    parser.add_argument("--summary", type=Path, help="Write the outcomes here as JSON.")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop anvil and the training parties
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not args.anvil.is_file():
        parser.error(f"no anvil at {args.anvil}: `npm install @foundry-rs/anvil` or --anvil PATH")
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        parser.error(f"{args.dir} is not empty: give a new or empty folder")
    with tempfile.TemporaryDirectory(prefix="ailedger-consortium-") as tmp:
        root = (args.dir or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        story = Story(root)
        try:
            run(story, args.anvil)
        except StepFailed as exc:
            failed = story.summary["failed_step"]
            where = f"step {failed['number']} ({failed['title']})" if failed else "setup"
            print(f"\nFAILED at {where}: {exc}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            story.summary["interrupted"] = True
            print("\ninterrupted", file=sys.stderr, flush=True)
            return 130
        finally:
            story.summary_file(args.summary)
    print(f"\nthe whole consortium story passed in {story.summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
