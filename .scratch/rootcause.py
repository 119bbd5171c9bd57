import sys, time
sys.path.insert(0, "integration")
from conftest import boot_release
from releases import selected
from helpers import gen_units, main_pid, wait_state, PYTHON
from sandbox import free_port, wait_until
rel = selected()
box = boot_release(rel)
try:
    port = free_port()
    files = gen_units("rc", listens=[(f"127.0.0.1:{port}", "http")], options=["--supervise", "--python", PYTHON], version=252)
    files["rc.service.d/t.conf"] = "[Service]\nTimeoutStartSec=5s\n"
    box.install_units(files)
    box.systemctl("start", "rc.socket", "rc.service")
    wait_state(box, "rc.service", "active", sub="running")
    box.run(["systemd-analyze", "log-level", "debug"])
    old = main_pid(box, "rc.service")
    box.systemctl("reload", "--no-block", "rc.service")
    wait_until(lambda: box.show("rc.service", "StatusText")["StatusText"].startswith("upgrading"), timeout=10)
    box.run(["kill", "-KILL", str(old)])
    t0 = time.monotonic()
    states = []
    while time.monotonic() - t0 < 8:
        s = box.show("rc.service", "ActiveState", "SubState")
        st = (s["ActiveState"], s["SubState"])
        if not states or states[-1][1] != st:
            states.append((round(time.monotonic() - t0, 2), st))
        time.sleep(0.05)
    print(states)
    j = box.run(["journalctl", "-u", "rc.service", "-o", "short-monotonic", "--no-pager"]).stdout
    for line in j.splitlines():
        if any(k in line for k in ("RELOADING", "READY", "SIGCHLD", "state", "Reload", "exited", "Main process", "Control process", "timed out", "Changed")):
            print(line[:220])
finally:
    box.close()
