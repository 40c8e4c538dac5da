"""Stand-in for torchrun in operator tests: checks and records the launcher arguments the
operator built, resolves the rendezvous host (as c10d would), then runs the command once."""

import json
import os
import socket
import sys
import time


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--no-python")
    opts, command = args[:split], args[split + 1 :]
    parsed = {}
    for o in opts:
        key, _, value = o.lstrip("-").partition("=")
        parsed[key] = value or True
    if "rdzv_endpoint" in parsed:
        host = parsed["rdzv_endpoint"].rsplit(":", 1)[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                parsed["rdzv_resolved"] = socket.gethostbyname(host)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    parsed["index"] = os.environ.get("JOB_COMPLETION_INDEX", "")
    env = {**os.environ, "STANDIN_LAUNCHER": json.dumps(parsed)}
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
