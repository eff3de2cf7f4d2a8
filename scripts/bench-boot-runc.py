"""The runc part of scripts/bench-boot (see its header): run by it, with the snapshots built.

Usage: python3 scripts/bench-boot-runc.py ENVBUILD WORK RUNS
(ENVBUILD_RUNTIME_DIR and ENVBUILD_STORE set; WORK holds rdebian.{a,b}.json and rnode.{a,b}.json,
the build reports of each environment's snapshot and its sibling.)
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

envbuild, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
runtime = os.environ["ENVBUILD_RUNTIME_DIR"]
REPOS = ("rdebian", "rnode")


def sh(*args):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def snapshot(repo, which):
    return json.load(open(f"{work}/{repo}.{which}.json"))["id"]


def answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def boot(snapshot_id, name):
    """Boots on runc; (to terminals running, to port ready, the command's wall time, report)."""
    t0 = time.perf_counter()
    out = subprocess.run([envbuild, "boot", snapshot_id, "--engine", "runc", "--name", name, "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    report = json.loads(out.stdout)
    port = report["ports"][0]["host"]
    if not answers(port):
        raise SystemExit(f"{name}: port {port} does not answer after boot said it was ready")
    return report["terminals_seconds"], report["ready_seconds"], wall, report


def rm(name):
    sh(envbuild, "rm", name)


def sweep_objects():
    for root, _, files in os.walk(f"{runtime}/objects"):
        for name in files:
            path = os.path.join(root, name)
            if os.lstat(path).st_nlink == 1:
                os.unlink(path)


def drop_tree(snapshot_id):
    """Takes the snapshot's tree off the host, and the file objects only it had."""
    hexid = snapshot_id.split(":")[1]
    shutil.rmtree(f"{runtime}/trees/{hexid}", ignore_errors=True)
    try:
        os.unlink(f"{runtime}/used/{hexid}")
    except FileNotFoundError:
        pass
    sweep_objects()


def settle():
    """Writes back what earlier steps left dirty (a removed tree is a lot of metadata), so
    a timed step pays only for itself."""
    os.sync()
    time.sleep(1)


def docker_run(repo, image, name):
    """`docker run -d` of the snapshot's image running start and the terminal on the host
    network; (to the container started, to the port answering)."""
    config = json.load(open(f"{work}/{repo}/.cursor/environment.json"))
    port = config["ports"][0]["port"]
    script = f"{config['start']} >/dev/null\nexec {config['terminals'][0]['command']}"
    t0 = time.perf_counter()
    sh("docker", "run", "-d", "--name", name, "--label", "envbuild.bench=1", "--network", "host",
       "--user", config["user"], "-w", "/workspace", image, "sh", "-c", script)
    started = time.perf_counter() - t0
    while not answers(port):
        if time.perf_counter() - t0 > 60:
            raise SystemExit(f"docker run of {image} never answered on port {port}")
        time.sleep(0.01)
    ready = time.perf_counter() - t0
    subprocess.run(["docker", "rm", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return started, ready


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def shown(seconds):
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |")


results, trees = {}, {}


def timed(repo, run, situation, snapshot_id, drop):
    """Boots `snapshot_id` with the trees in `drop` taken off the host first, records the
    times under (repo, situation), removes the environment; returns the tree step's detail."""
    for tree in drop:
        drop_tree(tree)
    if drop:
        settle()
    name = f"{situation.replace(' ', '-')}-{run}"
    terminals, ready, wall, report = boot(snapshot_id, name)
    results.setdefault((repo, situation), []).append((terminals, ready, wall))
    rm(name)
    return report["steps"][0]["detail"]


for repo in REPOS:
    a, b = snapshot(repo, "a"), snapshot(repo, "b")
    image = f"envbuild-bench/{repo}:a"
    sh(envbuild, "fetch", a, "--docker", image, "--force")
    for run in range(runs):
        # On the file system of the runtime directory, so the two write to the same disk.
        target = f"{runtime}.fetched"
        shutil.rmtree(target, ignore_errors=True)
        settle()
        t0 = time.perf_counter()
        sh(envbuild, "fetch", a, "--to", target)
        results.setdefault((repo, "fetch --to"), []).append((time.perf_counter() - t0, None, None))
        shutil.rmtree(target, ignore_errors=True)

        trees[repo[1:]] = timed(repo, run, "first boot", a, [a, b])
        timed(repo, run, "materialized", a, [])
        trees[f"{repo[1:]} sibling"] = timed(repo, run, "sibling", b, [b])

        started, ready = docker_run(repo, image, f"bench-docker-{repo}-{run}")
        results.setdefault((repo, "docker run"), []).append((started, ready, None))
    subprocess.run(["docker", "rmi", "-f", image], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

print(f"\nboots on runc, medians of {runs} runs. 'terminals' and 'port' run from the start of `envbuild boot` (in the"
      "\nprocess) to its terminals running and to its declared port listening; 'command' is the whole command,"
      "\nafter which the port answered on the host. `docker run -d`: to the container started, to the port"
      "\nanswering. `fetch --to`: the snapshot restored as a directory beside the runtime directory.\n")
rows = [("environment", "situation", "terminals", "port", "command", "goal")]
goals = {"first boot": "<= 1.5x fetch --to", "sibling": "<= 2 s", "materialized": "<= 300 ms to terminals"}
for repo in REPOS:
    fetch = median([x[0] for x in results[(repo, "fetch --to")]])
    for situation in ("fetch --to", "first boot", "sibling", "materialized", "docker run"):
        measured = results[(repo, situation)]
        terminals, port, wall = (median([x[i] for x in measured]) for i in range(3))
        goal = goals.get(situation, "")
        if situation == "first boot":
            goal += f" ({terminals / fetch:.2f}x)"
        rows.append((repo[1:], situation, shown(terminals), shown(port), shown(wall), goal))
table(rows)
print("\ntrees made by the last run: " + "; ".join(f"{k}: {v}" for k, v in trees.items()))

# Density: 20 environments of the Node snapshot on this host, with no other tree beside it.
for repo, which in (("rdebian", "a"), ("rdebian", "b"), ("rnode", "b")):
    drop_tree(snapshot(repo, which))
a = snapshot("rnode", "a")
boots = []
for i in range(20):
    terminals, ready, wall, report = boot(a, f"dense-{i}")
    boots.append((terminals, ready, wall, report["ports"][0]["host"]))
serving = sum(1 for b in boots if answers(b[3]))


def du(path):
    out = subprocess.run(["du", "-sx", "--block-size=1", path], stdout=subprocess.PIPE, text=True).stdout
    return int(out.split()[0])


hexid = a.split(":")[1]
total = du(runtime)
tree = du(f"{runtime}/trees/{hexid}")
uppers = sum(du(f"{runtime}/envs/dense-{i}/upper") for i in range(20))
first, last = boots[0][1], boots[-1][1]
print(f"\ndensity: 20 environments of the Node snapshot, {serving} of 20 answering on their ports\n")
table([
    ("measure", "value", "goal"),
    ("disk used (du -x of the runtime directory)", f"{total / 2**20:.1f} MiB", ""),
    ("the tree alone + the 20 upper directories",
     f"{tree / 2**20:.1f} MiB + {uppers / 2**20:.1f} MiB", ""),
    ("ratio", f"{total / (tree + uppers):.3f}", "<= 1.1"),
    ("1st boot, to port ready", shown(first), ""),
    ("20th boot, to port ready", f"{shown(last)} ({last / first:.2f}x the 1st)", "<= 2x"),
    ("slowest of the 20, to port ready", shown(max(b[1] for b in boots)), ""),
])
for i in range(20):
    rm(f"dense-{i}")
